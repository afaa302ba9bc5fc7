"""The decision engine through the core, on a driven clock: compliance as a hard filter, risk with
step-up, the preference for maximum encryption, fallback within the region, sticky placement, and
the cells' breakers fed by report()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cellgate import Clock, build_router, parse_config

# Tuesday 2027-01-05 12:00:00 UTC: midday in New York and Berlin, no unusual hour.
NOON_UTC = 1_799_150_400
SECRET = "decision-engine-test-secret-0123456789"

CELLS = [
    # id, tier, region, capacity, certifications, encryption
    ("retail-us-1", "retail", "us-east", 100, ["SOC2"], "standard"),
    ("retail-us-2", "retail", "us-east", 100, ["SOC2"], "standard"),
    ("retail-us-max", "retail", "us-east", 100, ["SOC2"], "maximum"),
    ("hnw-us-1", "hnw", "us-east", 100, ["SOC2", "FedRAMP"], "maximum"),
    ("retail-eu-1", "retail", "eu-west", 100, ["SOC2", "GDPR"], "standard"),
    ("sticky-1", "sticky", "us-east", 100, [], "standard"),
    ("sticky-2", "sticky", "us-east", 200, [], "standard"),
    ("sticky-3", "sticky", "us-east", 300, [], "standard"),
]

PROFILES = [
    {"customer_id": "plain", "tier": "retail", "region": "us-east", "risk": 0.1},
    {"customer_id": "eu", "tier": "retail", "region": "eu-west", "flags": ["EU_RESIDENT"]},
    {"customer_id": "eu-in-us", "tier": "retail", "region": "us-east", "flags": ["EU_RESIDENT"]},
    {"customer_id": "pii", "tier": "retail", "region": "us-east", "flags": ["PII_RESTRICTED"]},
    {"customer_id": "flagged", "tier": "retail", "region": "us-east", "flags": ["HIGH_RISK"]},
    {"customer_id": "risky", "tier": "retail", "region": "us-east", "risk": 0.6},
    {
        "customer_id": "night-owl",
        "tier": "retail",
        "region": "us-east",
        "risk": 0.1,
        "timezone": "Asia/Tokyo",
    },
    *({"customer_id": f"s-{i:04d}", "tier": "sticky", "region": "us-east"} for i in range(3000)),
]


def config(breaker: str = "consecutive_failures = 5\nwait_in_open_ms = 30000\n") -> str:
    cells = "".join(
        f"""
[[cells]]
id = "{cid}"
tier = "{tier}"
region = "{region}"
endpoint = "http://127.0.0.1:{9000 + i}"
capacity = {capacity}
certifications = {json.dumps(certs)}
encryption = "{encryption}"
"""
        for i, (cid, tier, region, capacity, certs, encryption) in enumerate(CELLS)
    )
    return f"""
[jwt]
issuer = "iss"
audience = "aud"
[jwt.step_up]
amr = "mfa"
max_age_s = 600
[[jwt.keys]]
kid = "k"
secret = "{SECRET}"

[tiers.retail]
[tiers.hnw]
[tiers.sticky]
placement = "sticky"

[risk.thresholds]
medium = 0.5
high = 0.8
[[risk.high_risk_networks]]
name = "bad-net"
weight = 0.3
cidrs = ["203.0.113.0/24"]
[risk.unusual_hours]
start = "00:00"
end = "05:00"
weight = 0.1
[risk.money_paths]
weight = 0.2
patterns = ["/api/transfers*"]
methods = ["POST"]
[risk.suspicious_user_agents]
weight = 0.2
patterns = ["sqlmap"]

[compliance]
PII_RESTRICTED = {{ certification = "FedRAMP" }}
EU_RESIDENT = {{ region = "eu-west" }}
HIGH_RISK = {{ encryption = "maximum" }}

[breaker]
{breaker}{"successes_to_close = 3" if "consecutive" in breaker else ""}

{cells}
[profiles]
source = "customers.jsonl"
"""


@pytest.fixture
def engine(tmp_path: Path):
    (tmp_path / "customers.jsonl").write_text("\n".join(json.dumps(p) for p in PROFILES))
    clock = Clock.manual(NOON_UTC)
    return build_router(parse_config(config(), tmp_path), clock), clock


def token(customer: str, **claims: Any) -> str:
    payload = {"sub": customer, "iss": "iss", "aud": "aud", "exp": NOON_UTC + 10**6, **claims}
    return "Bearer " + jwt.encode(payload, SECRET, headers={"kid": "k"})


def decide(router, customer: str, method: str = "GET", path: str = "/api/accounts", **kw: Any):
    claims = kw.pop("claims", {})
    client = kw.pop("client", "192.0.2.10:5000")
    agent = kw.pop("agent", "app/1.0")
    return router.decide(method, path, token(customer, **claims), client, agent)


def cell_of(router, customer: str, **kw: Any) -> str | None:
    decision = decide(router, customer, **kw)
    decision.release()
    return decision.cell_id


# --- compliance ---------------------------------------------------------------------------


def test_an_eu_resident_never_lands_outside_the_eu_region(engine):
    router, _ = engine
    assert cell_of(router, "eu") == "retail-eu-1"
    router.set_cell_health("retail-eu-1", False)
    refused = decide(router, "eu")
    assert (refused.status, refused.reason) == (503, "no_eligible_cell")
    assert "retail-eu-1: unhealthy" in refused.detail
    # A profile that says us-east but carries EU_RESIDENT can be served nowhere in us-east.
    refused = decide(router, "eu-in-us")
    assert refused.reason == "no_eligible_cell"
    assert "retail-us-1: not compliant: EU_RESIDENT needs region eu-west" in refused.detail


def test_pii_restricted_lands_only_on_fedramp_cells(engine):
    router, _ = engine
    # No retail cell is FedRAMP: the region's fallback finds the one that is.
    assert {cell_of(router, "pii") for _ in range(10)} == {"hnw-us-1"}
    router.set_cell_health("hnw-us-1", False)
    refused = decide(router, "pii")
    assert "retail-us-max: not compliant: PII_RESTRICTED needs certification FedRAMP" in (
        refused.detail
    )


def test_a_high_risk_flag_lands_only_on_maximum_encryption(engine):
    router, _ = engine
    assert {cell_of(router, "flagged") for _ in range(10)} == {"retail-us-max"}
    router.set_cell_health("retail-us-max", False)
    assert cell_of(router, "flagged") == "hnw-us-1", "fallback: same region, compliant"


def test_fallback_stays_in_the_region_and_a_region_down_is_explained(engine):
    router, _ = engine
    for cell in ("retail-us-1", "retail-us-2", "retail-us-max"):
        router.set_cell_health(cell, False)
    assert cell_of(router, "plain") in {"hnw-us-1", "sticky-1", "sticky-2", "sticky-3"}
    for cell in ("hnw-us-1", "sticky-1", "sticky-2", "sticky-3"):
        router.set_cell_health(cell, False)
    refused = decide(router, "plain")
    assert (refused.status, refused.reason) == (503, "no_eligible_cell")
    assert refused.detail.startswith("no eligible cell for a retail customer in region us-east")
    assert "retail-eu-1" not in refused.detail


# --- risk and step-up ---------------------------------------------------------------------


def test_risk_adds_up_the_factors_that_fire(engine):
    router, clock = engine
    decision = decide(router, "plain")
    assert decision.risk == (pytest.approx(0.1), "LOW")
    decision.release()
    decision = decide(router, "plain", "POST", "/api/transfers", client="203.0.113.9:1")
    assert decision.risk == (pytest.approx(0.6), "MEDIUM")
    assert decision.risk_factors == [
        ("high_risk_network", "client 203.0.113.9 is in bad-net"),
        ("money_path", "POST /api/transfers matches /api/transfers*"),
    ]
    decision.release()
    assert decision.risk[1] == "MEDIUM", "still reported after the slot is given back"
    decision = decide(router, "plain", agent="sqlmap/1.7")
    assert decision.risk == (pytest.approx(0.3), "LOW")
    decision.release()
    # 12:00 UTC is 21:00 in Tokyo; at 17:00 UTC it is 02:00 there, an unusual hour.
    assert decide(router, "night-owl").risk[0] == pytest.approx(0.1)
    clock.set(NOON_UTC + 5 * 3600)
    assert decide(router, "night-owl").risk[0] == pytest.approx(0.2)


def test_high_risk_needs_step_up_and_then_prefers_maximum_encryption(engine):
    router, _ = engine
    refused = decide(router, "risky", "POST", "/api/transfers")
    assert (refused.status, refused.reason) == (403, "step_up_required")
    assert "risk HIGH (0.80" in refused.detail
    assert "POST /api/transfers matches /api/transfers*" in refused.detail
    assert 'amr including "mfa"' in refused.detail
    stale = {"amr": ["pwd", "mfa"], "auth_time": NOON_UTC - 601}
    assert decide(router, "risky", "POST", "/api/transfers", claims=stale).reason == (
        "step_up_required"
    )
    fresh = {"amr": ["pwd", "mfa"], "auth_time": NOON_UTC - 60}
    decision = decide(router, "risky", "POST", "/api/transfers", claims=fresh)
    assert decision.ok and decision.risk[1] == "HIGH"
    assert decision.cell_id == "retail-us-max", "HIGH prefers the tier's maximum cell"
    decision.release()
    router.set_cell_health("retail-us-max", False)
    assert cell_of(router, "risky", method="POST", path="/api/transfers", claims=fresh) in {
        "retail-us-1",
        "retail-us-2",
    }, "a preference, not a requirement"


# --- sticky placement ---------------------------------------------------------------------


def sticky_customers() -> list[str]:
    return [p["customer_id"] for p in PROFILES if p["tier"] == "sticky"]


def test_sticky_customers_stay_and_only_a_leaving_cells_customers_move(engine):
    router, _ = engine
    before = {c: cell_of(router, c) for c in sticky_customers()}
    assert before == {c: cell_of(router, c) for c in sticky_customers()}, "stable"
    chosen = list(before.values())
    shares = {cell: chosen.count(cell) / len(chosen) for cell in set(chosen)}
    # Capacities 100:200:300; with 3,000 customers each share is within 3 points of its weight.
    for cell, expected in (("sticky-1", 1 / 6), ("sticky-2", 2 / 6), ("sticky-3", 3 / 6)):
        assert abs(shares[cell] - expected) < 0.03, shares
    router.set_cell_health("sticky-2", False)
    after = {c: cell_of(router, c) for c in sticky_customers()}
    for customer, cell in before.items():
        if cell != "sticky-2":
            assert after[customer] == cell, "only the leaving cell's customers move"
        else:
            assert after[customer] in {"sticky-1", "sticky-3"}
    router.set_cell_health("sticky-2", True)
    assert {c: cell_of(router, c) for c in sticky_customers()} == before


# --- breakers -----------------------------------------------------------------------------


def fail(router, customer: str = "plain", times: int = 1) -> list[str]:
    cells = []
    for _ in range(times):
        decision = decide(router, customer)
        cells.append(decision.cell_id)
        assert router.report(decision, False)
    return cells


def test_five_failures_in_a_row_open_a_cells_breaker_for_30_seconds(engine):
    router, clock = engine
    for cell in ("retail-us-2", "retail-us-max"):
        router.set_cell_health(cell, False)
    assert fail(router, times=4) == ["retail-us-1"] * 4
    ok = decide(router, "plain")
    router.report(ok, True)  # a success breaks the run of failures
    fail(router, times=4)
    assert cell_of(router, "plain") == "retail-us-1", "4 in a row: still closed"
    fail(router)
    refused_or_fallback = decide(router, "plain")
    assert refused_or_fallback.cell_id != "retail-us-1", "open after the 5th"
    refused_or_fallback.release()
    for cell in ("hnw-us-1", "sticky-1", "sticky-2", "sticky-3"):
        router.set_cell_health(cell, False)
    refused = decide(router, "plain")
    assert "retail-us-1: breaker open (half-open in 30000 ms)" in refused.detail
    clock.advance(29.999)
    assert decide(router, "plain").reason == "no_eligible_cell"
    clock.advance(0.001)
    # Half-open: three trial calls; all succeed, and it closes.
    trials = [decide(router, "plain") for _ in range(3)]
    assert [t.cell_id for t in trials] == ["retail-us-1"] * 3
    assert decide(router, "plain").reason == "no_eligible_cell", "no fourth trial call"
    for trial in trials:
        router.report(trial, True)
    assert {cell_of(router, "plain") for _ in range(5)} == {"retail-us-1"}


def test_a_failure_among_the_trial_calls_reopens_the_breaker(engine):
    router, clock = engine
    for cell in ("retail-us-2", "retail-us-max", "hnw-us-1", "sticky-1", "sticky-2", "sticky-3"):
        router.set_cell_health(cell, False)
    fail(router, times=5)
    clock.advance(30)
    trials = [decide(router, "plain") for _ in range(3)]
    router.report(trials[0], True)
    router.report(trials[1], False)
    router.report(trials[2], True)
    assert "breaker open (half-open in 30000 ms)" in decide(router, "plain").detail


def test_a_resilience4j_breaker_opens_at_its_failure_rate(tmp_path: Path):
    (tmp_path / "customers.jsonl").write_text("\n".join(json.dumps(p) for p in PROFILES))
    clock = Clock.manual(NOON_UTC)
    r4j = (
        "sliding_window_size = 10\nminimum_number_of_calls = 10\n"
        "failure_rate_threshold_pct = 50\nwait_in_open_ms = 1000\n"
        "permitted_number_of_calls_in_half_open_state = 2\n"
    )
    router = build_router(parse_config(config(r4j), tmp_path), clock)
    for cell in ("retail-us-2", "retail-us-max", "hnw-us-1", "sticky-1", "sticky-2", "sticky-3"):
        router.set_cell_health(cell, False)
    for outcome in [True, False] * 4 + [True]:
        router.report(decide(router, "plain"), outcome)
    assert cell_of(router, "plain") == "retail-us-1", "9 calls: below the minimum"
    router.report(decide(router, "plain"), False)  # 10 calls, 5 failed: 50 %
    assert decide(router, "plain").reason == "no_eligible_cell"
    clock.advance(1)
    assert cell_of(router, "plain") == "retail-us-1"


def test_a_draining_router_refuses_503_draining_and_closes_the_connection(engine):
    router, _ = engine
    assert decide(router, "plain").ok
    router.draining = True
    refused = decide(router, "plain")
    assert (refused.status, refused.reason) == (503, "draining")
    status, headers, _ = refused.problem
    assert ("connection", "close") in headers and status == 503
    router.draining = False
    assert decide(router, "plain").ok
