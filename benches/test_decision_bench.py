"""The core's ``decide()`` against its pure-Python reference (``cellgate.reference.decide``).

Run on demand: ``pytest benches/test_decision_bench.py --benchmark-enable --benchmark-group-by
group``. In CI they run once each as correctness checks (``--benchmark-disable``).

Groups: ``decide-cached`` is the core with a cached token, ``decide-reference`` the same decision
by the reference; ``select-<n>-<placement>`` is one customer's decision in a region whose tier has
``n`` cells, least loaded or sticky, by the core and by the reference. Every decision is released
at once, so loads stay level and least-loaded placement walks all ``n`` cells each time.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cellgate import Clock, Router, build_router, parse_config
from cellgate.config import Config
from cellgate.reference.decide import ReferenceRouter

NOW = 1_799_150_400  # Tuesday 2027-01-05 12:00 UTC: no unusual hour
SECRET = "decision-bench-secret-0123456789abcdef"
SIZES = (4, 100, 1000)
PLACEMENTS = ("least_loaded", "sticky")
CLIENT, AGENT = "192.0.2.10:53211", "bench/1.0"


def config_text() -> str:
    """Two tiers (least loaded, sticky); per size n a region with n cells of each; risk scoring."""
    cells = "".join(
        f'[[cells]]\nid = "{placement}-{n}-{i}"\ntier = "{placement}"\nregion = "r{n}"\n'
        f'endpoint = "http://127.0.0.1:{9000 + i}"\ncapacity = {100 + i % 7}\n'
        f'certifications = ["SOC2", "FedRAMP"]\n\n'
        for n in SIZES
        for placement in PLACEMENTS
        for i in range(n)
    )
    return f"""
[jwt]
issuer = "iss"
audience = "aud"
[[jwt.keys]]
kid = "k"
secret = "{SECRET}"

[tiers.least_loaded]
placement = "least_loaded"
[tiers.sticky]
placement = "sticky"

[risk.thresholds]
medium = 0.5
high = 0.8
[[risk.high_risk_networks]]
name = "bad-net"
weight = 0.3
cidrs = ["203.0.113.0/24"]
[risk.money_paths]
weight = 0.2
patterns = ["/api/transfers*"]
methods = ["POST"]
[risk.suspicious_user_agents]
weight = 0.2
patterns = ["sqlmap", "bot"]

[compliance]
PII_RESTRICTED = {{ certification = "FedRAMP" }}

{cells}
[profiles]
source = "customers.jsonl"
"""


PROFILES = [
    {"customer_id": f"{placement}-{n}", "tier": placement, "region": f"r{n}", "risk": 0.1}
    for n in SIZES
    for placement in PLACEMENTS
]


def authorization(customer: str) -> str:
    claims = {"sub": customer, "iss": "iss", "aud": "aud", "exp": NOW + 10**7}
    return "Bearer " + jwt.encode(claims, SECRET, headers={"kid": "k"})


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> Config:
    directory: Path = tmp_path_factory.mktemp("decision-bench")
    (directory / "customers.jsonl").write_text("\n".join(map(json.dumps, PROFILES)))
    return parse_config(config_text(), directory)


@pytest.fixture(scope="module")
def core(parsed: Config) -> Router:
    return build_router(parsed, Clock.manual(NOW))


@pytest.fixture(scope="module")
def reference(parsed: Config) -> ReferenceRouter:
    return ReferenceRouter(parsed, PROFILES, NOW)


def decide_and_release(router, customer: str):
    """One decision for ``customer`` (a cached token), its slot given back at once."""
    auth = authorization(customer)

    # One closure per kind of router, so neither pays for choosing at every call.
    if isinstance(router, ReferenceRouter):

        def once():
            decision = router.decide("GET", "/api/accounts", auth, CLIENT, AGENT)
            router.release(decision)
            return decision

    else:

        def once():
            decision = router.decide("GET", "/api/accounts", auth, CLIENT, AGENT)
            decision.release()
            return decision

    once()  # the token is verified once and cached
    return once


@pytest.mark.benchmark(group="decide-cached")
def test_decide_cached_token_core(benchmark, core: Router):
    decision = benchmark(decide_and_release(core, "least_loaded-4"))
    assert decision.ok and decision.cell_id.startswith("least_loaded-4-")


@pytest.mark.benchmark(group="decide-reference")
def test_decide_cached_token_reference(benchmark, reference: ReferenceRouter):
    decision = benchmark(decide_and_release(reference, "least_loaded-4"))
    assert decision.ok and decision.cell_id.startswith("least_loaded-4-")


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("side", ["core", "reference"])
def test_select_among_n_cells(benchmark, request, core, reference, side, placement, n):
    benchmark.group = f"select-{n}-{placement}"
    router = core if side == "core" else reference
    decision = benchmark(decide_and_release(router, f"{placement}-{n}"))
    assert decision.ok and decision.cell_id.startswith(f"{placement}-{n}-")
    if placement == "sticky":
        # The same customer lands on the same cell in both.
        other = reference if side == "core" else core
        assert decide_and_release(other, f"{placement}-{n}")().cell_id == decision.cell_id
