"""Per-customer rate limits (GCRA, a quota per tier) through the core, on a driven clock: the
burst, the steady rate, Retry-After exact to the second, and the RateLimit fields."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cellgate import Clock, ConfigError, build_router, parse_config

NOW = 1_800_000_000
SECRET = "rate-limit-test-secret-0123456789abcdef"
CUSTOMERS = b"""\
{"customer_id": "r-1", "tier": "retail", "region": "us-east"}
{"customer_id": "r-2", "tier": "retail", "region": "us-east"}
{"customer_id": "h-1", "tier": "hnw", "region": "us-east"}
"""


def config(retail_quota: str = "{ requests = 10, period_s = 1, burst = 3 }") -> str:
    return f"""
[jwt]
issuer = "iss"
audience = "aud"
[[jwt.keys]]
kid = "k"
secret = "{SECRET}"

[tiers.retail]
rate_limit = {retail_quota}
[tiers.hnw]

[[cells]]
id = "retail-1"
tier = "retail"
region = "us-east"
endpoint = "http://127.0.0.1:9"
capacity = 10
[[cells]]
id = "hnw-1"
tier = "hnw"
region = "us-east"
endpoint = "http://127.0.0.1:10"
capacity = 10

[profiles]
source = "customers.jsonl"
"""


@pytest.fixture
def limited(tmp_path: Path):
    (tmp_path / "customers.jsonl").write_bytes(CUSTOMERS)
    clock = Clock.manual(NOW)
    return build_router(parse_config(config(), tmp_path), clock), clock


def ask(router, customer: str):
    tok = jwt.encode(
        {"sub": customer, "iss": "iss", "aud": "aud", "exp": NOW + 3600},
        SECRET,
        headers={"kid": "k"},
    )
    decision = router.decide("GET", "/api/accounts", f"Bearer {tok}", "127.0.0.1:1")
    fields = dict(decision.fields)
    if decision.ok:
        decision.release()
    return decision, fields


def test_the_burst_passes_at_once_and_the_next_request_is_limited(limited):
    router, _ = limited
    for remaining in (2, 1, 0):
        decision, fields = ask(router, "r-1")
        assert decision.ok
        assert fields["ratelimit-policy"] == '"retail";q=10;w=1'
        assert fields["ratelimit"].startswith(f'"retail";r={remaining};t=')
    decision, fields = ask(router, "r-1")
    assert (decision.status, decision.reason) == (429, "rate_limited")
    assert fields["retry-after"] == "1"
    assert fields["ratelimit"] == '"retail";r=0;t=1'
    status, headers, _ = decision.problem
    assert status == 429 and ("retry-after", "1") in headers
    # Another customer of the tier has a bucket of its own.
    assert ask(router, "r-2")[0].ok


def test_the_steady_rate_is_one_request_per_emission_interval(limited):
    router, clock = limited
    for _ in range(3):
        assert ask(router, "r-1")[0].ok
    for _ in range(5):
        clock.advance(0.099)
        assert ask(router, "r-1")[0].reason == "rate_limited", "99 ms is too early"
        clock.advance(0.001)
        assert ask(router, "r-1")[0].ok, "100 ms after the last is on time"
        clock.set(clock.now())


def test_retry_after_is_rounded_up_to_the_second_and_honoured(tmp_path: Path):
    (tmp_path / "customers.jsonl").write_bytes(CUSTOMERS)
    clock = Clock.manual(NOW)
    router = build_router(
        parse_config(config("{ requests = 2, period_s = 5, burst = 1 }"), tmp_path), clock
    )
    assert ask(router, "r-1")[0].ok
    clock.advance(0.5)
    decision, fields = ask(router, "r-1")
    assert decision.reason == "rate_limited"
    assert fields["retry-after"] == "2", "2.5 s to go, rounded up"
    clock.advance(1.999)
    assert ask(router, "r-1")[0].reason == "rate_limited"
    clock.advance(0.001)
    assert ask(router, "r-1")[0].ok


def test_a_tier_without_a_quota_is_not_limited_and_carries_no_fields(limited):
    router, _ = limited
    for _ in range(50):
        decision, fields = ask(router, "h-1")
        assert decision.ok and fields == {}


def test_a_bad_quota_is_a_config_error_with_its_path(tmp_path: Path):
    (tmp_path / "customers.jsonl").write_bytes(CUSTOMERS)
    with pytest.raises(ConfigError) as refused:
        parse_config(config("{ requests = 0, period_s = 1, colour = 2 }"), tmp_path)
    assert sorted(refused.value.errors) == [
        "tiers.retail.rate_limit.colour: unknown field (known: burst, period_s, requests)",
        "tiers.retail.rate_limit.requests: must be > 0, got 0",
    ]
