"""The pure-Python GCRA reference: the same driven-clock cases, with the same numbers, as the
Rust unit tests in rust/ratelimit.rs, plus properties over random request streams."""

from __future__ import annotations

import copy

import pytest
from cellgate.reference.ratelimit import (
    Quota,
    RateLimiter,
    RateLimitSettingsError,
    Verdict,
    compile_rate_limits,
    policy_field,
    ratelimit_field,
    retry_after_field,
)
from hypothesis import given, settings
from hypothesis import strategies as st

S = 1_000_000
MS = 1_000
T0 = 1_700_000_000 * S


def quota(requests: int, period_s: int, burst: int) -> Quota:
    return compile_rate_limits(
        {"retail": {"requests": requests, "period_s": period_s, "burst": burst}}, ["retail"]
    )[0]


def allowed(limit: int, remaining: int, reset_s: int) -> Verdict:
    return Verdict(allowed=True, limit=limit, remaining=remaining, reset_s=reset_s)


def limited(limit: int, retry_after_s: int, reset_s: int) -> Verdict:
    return Verdict(
        allowed=False, limit=limit, remaining=0, reset_s=reset_s, retry_after_s=retry_after_s
    )


def test_the_burst_is_admitted_at_once_and_the_next_request_is_limited() -> None:
    q = quota(60, 60, 5)
    limiter = RateLimiter()
    for i, remaining in enumerate([4, 3, 2, 1, 0]):
        assert limiter.check("alice", q, T0) == allowed(5, remaining, i + 1)
    assert limiter.check("alice", q, T0) == limited(5, 1, 5)
    assert limiter.check("alice", q, T0 + 500 * MS) == limited(5, 1, 5)
    assert limiter.check("alice", q, T0 + S) == allowed(5, 0, 5)
    assert limiter.check("alice", q, T0 + S) == limited(5, 1, 5)


def test_the_steady_rate_is_sustained() -> None:
    q = quota(10, 1, 1)
    limiter = RateLimiter()
    now = T0
    assert limiter.check("alice", q, now) == allowed(1, 0, 1)
    for _ in range(50):
        assert limiter.check("alice", q, now + 99 * MS) == limited(1, 1, 1)
        now += 100 * MS
        assert limiter.check("alice", q, now) == allowed(1, 0, 1)
    assert now == T0 + 5 * S


def test_a_rate_that_does_not_divide_evenly_rounds_the_interval_up() -> None:
    q = quota(3, 1, 1)
    assert q.emission_ns == 333_333_334
    limiter = RateLimiter()
    assert limiter.check("alice", q, T0).allowed
    assert not limiter.check("alice", q, T0 + 333_333).allowed
    assert limiter.check("alice", q, T0 + 333_334).allowed
    assert not limiter.check("alice", q, T0 + 666_667).allowed
    assert limiter.check("alice", q, T0 + 666_668).allowed


def test_retry_after_is_rounded_up_to_the_second_and_never_zero() -> None:
    q = quota(1, 10, 1)
    limiter = RateLimiter()
    assert limiter.check("alice", q, T0) == allowed(1, 0, 10)
    assert limiter.check("alice", q, T0 + 1) == limited(1, 10, 10)
    assert limiter.check("alice", q, T0 + S) == limited(1, 9, 9)
    assert limiter.check("alice", q, T0 + S + 1) == limited(1, 9, 9)
    assert limiter.check("alice", q, T0 + 9 * S) == limited(1, 1, 1)
    assert limiter.check("alice", q, T0 + 10 * S - 1) == limited(1, 1, 1)
    assert limiter.check("alice", q, T0 + 10 * S) == allowed(1, 0, 10)


def test_remaining_and_reset_follow_the_bucket() -> None:
    q = quota(2, 1, 4)
    limiter = RateLimiter()
    assert limiter.check("alice", q, T0) == allowed(4, 3, 1)
    assert limiter.check("alice", q, T0) == allowed(4, 2, 1)
    assert limiter.check("alice", q, T0) == allowed(4, 1, 2)
    assert limiter.check("alice", q, T0 + 1100 * MS) == allowed(4, 2, 1)
    assert limiter.check("alice", q, T0 + 60 * S) == allowed(4, 3, 1)


def test_limited_requests_consume_nothing() -> None:
    q = quota(1, 10, 2)
    hammered, quiet = RateLimiter(), RateLimiter()
    for limiter in (hammered, quiet):
        assert limiter.check("alice", q, T0) == allowed(2, 1, 10)
        assert limiter.check("alice", q, T0) == allowed(2, 0, 20)
    for i in range(1000):
        assert not hammered.check("alice", q, T0 + i * 10 * MS).allowed
    assert hammered.check("alice", q, T0 + 9 * S) == limited(2, 1, 11)
    assert hammered.tat_ns == quiet.tat_ns
    for limiter in (hammered, quiet):
        assert limiter.check("alice", q, T0 + 10 * S) == allowed(2, 0, 20)


def test_customers_are_independent() -> None:
    q = quota(1, 60, 1)
    limiter = RateLimiter()
    assert limiter.check("alice", q, T0).allowed
    assert limiter.check("alice", q, T0) == limited(1, 60, 60)
    assert limiter.check("bob", q, T0) == allowed(1, 0, 60)
    assert limiter.check("bob", q, T0) == limited(1, 60, 60)
    assert len(limiter.tat_ns) == 2


def next_random(state: int) -> tuple[int, int]:
    """The Rust test's generator: the new state, and the value it yields."""
    state = (state * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % 2**64
    return state, state >> 33


def test_eviction_keeps_behaviour_identical() -> None:
    q = quota(5, 1, 3)
    sweeping, keeping = RateLimiter(), RateLimiter()
    state, now = 42, T0
    for _ in range(20_000):
        state, step = next_random(state)
        now += step % (20 * MS)
        state, pick = next_random(state)
        customer = f"c{pick % 200}"
        sweeping.evict_expired(now)
        assert sweeping.check(customer, q, now) == keeping.check(customer, q, now)
    assert len(keeping.tat_ns) == 200
    assert len(sweeping.tat_ns) < 200
    held = len(sweeping.tat_ns)
    assert sweeping.evict_expired(now + 2 * S) == held
    assert not sweeping.tat_ns


def test_settings_compile_in_tier_order() -> None:
    quotas = compile_rate_limits(
        {
            "retail": {"requests": 100, "period_s": 60, "burst": 20},
            "hnw": {"requests": 10, "period_s": 1, "burst": 1},
        },
        ["retail", "hnw"],
    )
    assert quotas == [Quota("retail", 100, 60, 20), Quota("hnw", 10, 1, 1)]
    assert quotas[0].emission_ns == 600_000_000
    assert quotas[0].tolerance_ns == 19 * 600_000_000
    assert quotas[1].emission_ns == 100_000_000
    assert quotas[1].tolerance_ns == 0


def test_settings_errors_are_all_reported_with_paths() -> None:
    raw = {
        "retail": {"requests": 0, "period_s": 0, "burst": 0},
        "gold": {"requests": 1, "period_s": 1, "burst": 1},
        "corporate": {"requests": 1, "period_s": 4294967295, "burst": 4294967295},
    }
    with pytest.raises(RateLimitSettingsError) as caught:
        compile_rate_limits(raw, ["retail", "corporate", "hnw"])
    assert caught.value.errors == [
        "rate_limits.corporate.burst: burst * period_s / requests is too long (over 584 years)",
        "rate_limits.gold: unknown tier",
        "rate_limits.retail.requests: must be > 0",
        "rate_limits.retail.period_s: must be > 0",
        "rate_limits.retail.burst: must be >= 1",
        "rate_limits.hnw: missing; every tier needs a quota",
    ]


def test_settings_reject_unknown_fields_and_unprintable_names() -> None:
    with pytest.raises(RateLimitSettingsError) as caught:
        compile_rate_limits(
            {"retail": {"requests": 1, "period_s": 1, "burst": 1, "rate": 2}}, ["retail"]
        )
    assert caught.value.errors == ["rate_limits.retail.rate: unknown field"]
    with pytest.raises(RateLimitSettingsError) as caught:
        compile_rate_limits({"ré": {"requests": 1, "period_s": 1, "burst": 1}}, ["ré"])
    assert caught.value.errors == [
        "rate_limits.ré: a tier name must be non-empty printable ASCII "
        "(it names the RateLimit policy)"
    ]


def test_header_fields_follow_the_draft() -> None:
    q = quota(100, 60, 3)
    assert policy_field(q) == '"retail";q=100;w=60'
    limiter = RateLimiter()
    first = limiter.check("alice", q, T0)
    assert ratelimit_field(q, first) == '"retail";r=2;t=1'
    assert retry_after_field(first) is None
    limiter.check("alice", q, T0)
    third = limiter.check("alice", q, T0)
    assert ratelimit_field(q, third) == '"retail";r=0;t=2'
    fourth = limiter.check("alice", q, T0)
    assert fourth == limited(3, 1, 2)
    assert ratelimit_field(q, fourth) == '"retail";r=0;t=1'
    assert retry_after_field(fourth) == "1"


def test_policy_names_are_escaped_as_sf_strings() -> None:
    assert policy_field(Quota('a"b\\c', 1, 1, 1)) == '"a\\"b\\\\c";q=1;w=1'


quotas = st.builds(
    Quota,
    name=st.just("retail"),
    requests=st.integers(1, 20),
    period_s=st.integers(1, 5),
    burst=st.integers(1, 10),
)


@st.composite
def request_streams(draw: st.DrawFn) -> tuple[Quota, list[tuple[int, str]]]:
    """A quota and a stream of (now_us, customer), the clock never going backwards."""
    q = draw(quotas)
    steps = draw(
        st.lists(
            st.tuples(st.integers(0, 2 * q.emission_ns // MS), st.sampled_from(["a", "b", "c"])),
            max_size=200,
        )
    )
    stream, now = [], T0
    for step_us, customer in steps:
        now += step_us
        stream.append((now, customer))
    return q, stream


@settings(max_examples=200, deadline=None)
@given(request_streams())
def test_no_window_admits_more_than_burst_plus_elapsed_over_t(
    case: tuple[Quota, list[tuple[int, str]]],
) -> None:
    q, stream = case
    limiter = RateLimiter()
    admitted: dict[str, list[int]] = {}
    for now, customer in stream:
        before = dict(limiter.tat_ns)
        verdict = limiter.check(customer, q, now)
        if verdict.allowed:
            admitted.setdefault(customer, []).append(now)
        else:
            assert limiter.tat_ns == before, "a limited request consumed quota"
    for times in admitted.values():
        for i, first in enumerate(times):
            for j in range(i, len(times)):
                elapsed_ns = (times[j] - first) * 1_000
                assert j - i + 1 <= q.burst + elapsed_ns // q.emission_ns


@settings(max_examples=200, deadline=None)
@given(request_streams())
def test_remaining_and_retry_after_are_exact(case: tuple[Quota, list[tuple[int, str]]]) -> None:
    q, stream = case
    limiter = RateLimiter()
    for now, customer in stream:
        verdict = limiter.check(customer, q, now)
        probe = copy.deepcopy(limiter)
        if verdict.allowed:
            # Exactly `remaining` more requests conform at this instant.
            for _ in range(verdict.remaining):
                assert probe.check(customer, q, now).allowed
            assert not probe.check(customer, q, now).allowed
        else:
            assert verdict.retry_after_s >= 1
            assert not probe.check(customer, q, now + (verdict.retry_after_s - 1) * S).allowed
            assert probe.check(customer, q, now + verdict.retry_after_s * S).allowed
        # After reset_s the bucket is full: as good as a customer never seen.
        reset = copy.deepcopy(limiter).check(customer, q, now + verdict.reset_s * S)
        assert reset == RateLimiter().check(customer, q, now + verdict.reset_s * S)
