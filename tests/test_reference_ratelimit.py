"""The pure-Python GCRA reference: the same driven-clock cases, with the same numbers, as the
Rust unit tests in rust/ratelimit.rs, plus properties over random request streams."""

from __future__ import annotations

import copy

from cellgate.reference.ratelimit import (
    Quota,
    RateLimiter,
    Verdict,
    policy_field,
    quota_errors,
    ratelimit_field,
    retry_after_field,
)
from hypothesis import given, settings
from hypothesis import strategies as st

S = 1_000_000
MS = 1_000
T0 = 1_700_000_000 * S


def quota(requests: int, period_s: int, burst: int) -> Quota:
    settings = {"requests": requests, "period_s": period_s, "burst": burst}
    assert quota_errors("retail", settings, "tiers.retail.rate_limit") == []
    return Quota("retail", requests, period_s, burst)


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


def test_a_quota_compiles_to_its_gcra_constants() -> None:
    retail, hnw = quota(100, 60, 20), Quota("hnw", 10, 1, 1)
    assert retail == Quota("retail", 100, 60, 20)
    assert retail.emission_ns == 600_000_000
    assert retail.tolerance_ns == 19 * 600_000_000
    assert hnw.emission_ns == 100_000_000
    assert hnw.tolerance_ns == 0


def test_quota_errors_are_all_reported_under_their_path() -> None:
    zero = {"requests": 0, "period_s": 0, "burst": 0}
    assert quota_errors("retail", zero, "tiers.retail.rate_limit") == [
        "tiers.retail.rate_limit.requests: must be > 0",
        "tiers.retail.rate_limit.period_s: must be > 0",
        "tiers.retail.rate_limit.burst: must be >= 1",
    ]
    huge = {"requests": 1, "period_s": 4294967295, "burst": 4294967295}
    assert quota_errors("corporate", huge, "tiers.corporate.rate_limit") == [
        "tiers.corporate.rate_limit.burst: burst * period_s / requests is too long (over 584 years)"
    ]


def test_settings_reject_unknown_fields_and_unprintable_names() -> None:
    extra = {"requests": 1, "period_s": 1, "burst": 1, "rate": 2}
    assert quota_errors("retail", extra, "p") == ["p.rate: unknown field"]
    assert quota_errors("ré", {"requests": 1, "period_s": 1, "burst": 1}, "p") == [
        "p: a tier name must be non-empty printable ASCII (it names the RateLimit policy)"
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
