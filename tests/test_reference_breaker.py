"""The pure-Python breaker reference: the Rust module's unit tests with the same numbers, and a
property test of its invariants on random sequences of time, admissions and outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from cellgate.reference.breaker import (
    MAX_SLIDING_WINDOW_SIZE,
    Breaker,
    BreakerSettings,
    BreakerSettingsError,
    BreakerState,
    Outcome,
    Permit,
    Refused,
    settings_from_dict,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

MS = 1_000
S = 1_000_000
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
SUCCESS, FAILURE = Outcome.SUCCESS, Outcome.FAILURE


def make_settings(window: int, minimum: int, failure_pct: int) -> BreakerSettings:
    return BreakerSettings(
        sliding_window_size=window,
        minimum_number_of_calls=minimum,
        failure_rate_threshold_pct=failure_pct,
        wait_in_open_ms=10_000,
        permitted_number_of_calls_in_half_open_state=3,
    )


def acquire(breaker: Breaker, now_us: int) -> Permit:
    permit = breaker.try_acquire(now_us)
    assert isinstance(permit, Permit), permit
    return permit


def call(breaker: Breaker, outcome: Outcome, now_us: int) -> BreakerState | None:
    """Admits one call at ``now_us`` and reports it as taking 1 ms."""
    return breaker.report(acquire(breaker, now_us), outcome, MS, now_us)


def open_at(breaker: Breaker, now_us: int) -> None:
    while breaker.state(now_us) is CLOSED:
        call(breaker, FAILURE, now_us)
    assert breaker.state(now_us) is OPEN


def test_stays_closed_below_minimum_calls_even_with_all_failures():
    b = Breaker(make_settings(10, 5, 50))
    for _ in range(4):
        assert call(b, FAILURE, 0) is None
    snap = b.snapshot(0)
    assert snap.state is CLOSED
    assert (snap.calls_in_window, snap.failed_calls) == (4, 4)
    assert snap.failure_rate_pct is None
    assert call(b, FAILURE, 0) is OPEN


def test_opens_at_exactly_the_failure_rate_threshold():
    below, at = Breaker(make_settings(10, 10, 50)), Breaker(make_settings(10, 10, 50))
    for b in (below, at):
        for _ in range(4):
            call(b, FAILURE, 0)
        for _ in range(5):
            call(b, SUCCESS, 0)
    assert call(below, SUCCESS, 0) is None
    assert below.snapshot(0).failure_rate_pct == 40.0
    assert call(at, FAILURE, 0) is OPEN
    assert at.snapshot(0).failure_rate_pct == 50.0


def test_the_window_forgets_calls_older_than_its_size():
    b = Breaker(make_settings(4, 4, 50))
    call(b, FAILURE, 0)
    for _ in range(3):
        call(b, SUCCESS, 0)
    # 1 of 4 failed; three more successes push the failure out of the window.
    for _ in range(3):
        call(b, SUCCESS, 0)
    snap = b.snapshot(0)
    assert (snap.calls_in_window, snap.failed_calls) == (4, 0)
    call(b, FAILURE, 0)
    assert b.state(0) is CLOSED
    assert call(b, FAILURE, 0) is OPEN


def test_slow_calls_open_it_through_the_slow_call_rate():
    b = Breaker(
        replace(
            make_settings(4, 4, 100), slow_call_rate_threshold_pct=50, slow_call_duration_ms=200
        )
    )

    def slow(duration_us: int) -> BreakerState | None:
        return b.report(acquire(b, 0), SUCCESS, duration_us, 0)

    assert slow(200 * MS) is None, "exactly the threshold is not slow"
    assert slow(10 * MS) is None
    assert slow(200 * MS + 1) is None
    assert b.snapshot(0).slow_calls == 1
    assert slow(300 * MS) is OPEN
    snap = b.snapshot(0)
    assert (snap.failure_rate_pct, snap.slow_call_rate_pct) == (0.0, 50.0)


def test_open_refuses_until_the_wait_has_passed_then_admits_exactly_the_trial_calls():
    b = Breaker(make_settings(4, 4, 50))
    open_at(b, 5 * S)
    assert b.try_acquire(5 * S) == Refused("open", 10 * S)
    assert b.try_acquire(15 * S - 1) == Refused("open", 1)
    assert b.snapshot(15 * S - 1).half_open_in_us == 1
    assert b.state(15 * S) is HALF_OPEN
    trials = [acquire(b, 15 * S) for _ in range(3)]
    assert all(permit.is_trial for permit in trials)
    assert b.try_acquire(15 * S) == Refused("half_open_full")
    assert b.snapshot(15 * S).trial_calls_left == 0


def test_half_open_closes_below_the_threshold_with_a_fresh_window():
    b = Breaker(make_settings(4, 4, 50))
    open_at(b, 0)
    t = 10 * S
    trials = [acquire(b, t) for _ in range(3)]
    outcomes = [SUCCESS, FAILURE, SUCCESS]
    moved = [b.report(p, o, MS, t) for p, o in zip(trials, outcomes, strict=True)]
    assert moved == [None, None, CLOSED]
    snap = b.snapshot(t)
    assert (snap.state, snap.calls_in_window) == (CLOSED, 0)


def test_half_open_reopens_at_the_threshold_with_a_new_wait():
    b = Breaker(make_settings(4, 4, 50))
    open_at(b, 0)
    t = 10 * S
    trials = [acquire(b, t) for _ in range(3)]
    outcomes = [FAILURE, FAILURE, SUCCESS]
    moved = [b.report(p, o, MS, t + S) for p, o in zip(trials, outcomes, strict=True)]
    assert moved == [None, None, OPEN]
    assert b.try_acquire(t + S) == Refused("open", 10 * S)
    assert acquire(b, t + 11 * S).is_trial


def test_a_released_permit_frees_its_half_open_slot():
    b = Breaker(make_settings(4, 4, 50))
    open_at(b, 0)
    t = 10 * S
    trials = [acquire(b, t) for _ in range(3)]
    assert b.try_acquire(t) == Refused("half_open_full")
    b.release(trials.pop())
    assert b.snapshot(t).trial_calls_left == 1
    trials.append(acquire(b, t))
    assert [b.report(p, SUCCESS, MS, t) for p in trials] == [None, None, CLOSED]


def test_a_late_report_from_an_earlier_state_changes_nothing():
    b = Breaker(make_settings(4, 4, 50))
    stale = acquire(b, 0)
    open_at(b, 0)
    trial = acquire(b, 10 * S)
    assert b.report(stale, FAILURE, MS, 10 * S) is None
    snap = b.snapshot(10 * S)
    assert (snap.calls_in_window, snap.trial_calls_left) == (0, 2)
    b.release(trial)


def test_a_permit_from_another_breaker_changes_nothing():
    a, b = Breaker(make_settings(4, 1, 50)), Breaker(make_settings(4, 1, 50))
    assert b.report(acquire(a, 0), FAILURE, MS, 0) is None
    assert (a.state(0), b.state(0)) == (CLOSED, CLOSED)
    assert b.snapshot(0).calls_in_window == 0


def test_a_permit_reports_once():
    b = Breaker(make_settings(4, 4, 50))
    permit = acquire(b, 0)
    b.report(permit, SUCCESS, MS, 0)
    with pytest.raises(ValueError, match="already reported"):
        b.report(permit, SUCCESS, MS, 0)


def test_the_consecutive_form_transitions_exactly():
    b = Breaker(BreakerSettings.consecutive_failures(5, 30_000, 3))
    # A success in between resets the run of failures.
    for _ in range(4):
        assert call(b, FAILURE, 0) is None
    call(b, SUCCESS, 0)
    for _ in range(4):
        assert call(b, FAILURE, 0) is None
    assert b.state(0) is CLOSED
    assert call(b, FAILURE, S) is OPEN
    assert b.try_acquire(31 * S - 1) == Refused("open", 1)
    assert b.state(31 * S) is HALF_OPEN

    # One failure among the three trial calls re-opens.
    t = 31 * S
    assert call(b, SUCCESS, t) is None
    assert call(b, FAILURE, t) is None
    assert call(b, SUCCESS, t) is OPEN

    # Thirty seconds later, three successes close it.
    t = 61 * S
    assert b.try_acquire(t - 1) == Refused("open", 1)
    assert call(b, SUCCESS, t) is None
    assert call(b, SUCCESS, t) is None
    assert call(b, SUCCESS, t) is CLOSED
    for _ in range(4):
        assert call(b, FAILURE, t) is None
    assert call(b, FAILURE, t) is OPEN


def test_minimum_calls_above_the_window_is_clamped_to_it():
    b = Breaker(make_settings(4, 100, 50))
    for _ in range(3):
        call(b, FAILURE, 0)
    assert call(b, FAILURE, 0) is OPEN


def test_settings_decode_with_resilience4j_defaults():
    parsed = settings_from_dict({"sliding_window_size": 20, "wait_in_open_ms": 5000})
    assert parsed == BreakerSettings(sliding_window_size=20, wait_in_open_ms=5000)
    with pytest.raises(BreakerSettingsError, match="unknown field"):
        settings_from_dict({"slidingWindowSize": 20})


def test_settings_validation_lists_every_error_with_its_path():
    bad = BreakerSettings(
        sliding_window_size=0,
        minimum_number_of_calls=0,
        failure_rate_threshold_pct=0,
        slow_call_rate_threshold_pct=101,
        slow_call_duration_ms=0,
        wait_in_open_ms=0,
        permitted_number_of_calls_in_half_open_state=0,
        half_open_failure_rate_threshold_pct=0,
    )
    assert bad.validate("cells[2].breaker") == [
        "cells[2].breaker.sliding_window_size: must be > 0",
        "cells[2].breaker.minimum_number_of_calls: must be > 0",
        "cells[2].breaker.failure_rate_threshold_pct: must be between 1 and 100",
        "cells[2].breaker.slow_call_rate_threshold_pct: must be between 1 and 100",
        "cells[2].breaker.half_open_failure_rate_threshold_pct: must be between 1 and 100",
        "cells[2].breaker.slow_call_duration_ms: must be > 0",
        "cells[2].breaker.wait_in_open_ms: must be > 0",
        "cells[2].breaker.permitted_number_of_calls_in_half_open_state: must be > 0",
    ]
    huge = BreakerSettings(sliding_window_size=MAX_SLIDING_WINDOW_SIZE + 1)
    with pytest.raises(BreakerSettingsError) as raised:
        Breaker(huge)
    assert raised.value.errors == ["breaker.sliding_window_size: must be <= 1048576"]
    assert BreakerSettings().validate() == []
    assert BreakerSettings.consecutive_failures(5, 30_000, 3).validate() == []


# Random sequences of (advance time, acquire, report success / failure / slow, release), checked
# against a model that knows only the rules: which outcomes count, what the window holds, when the
# wait ends.

SLOW_MS = 5

breaker_settings = st.builds(
    BreakerSettings,
    sliding_window_size=st.integers(1, 6),
    minimum_number_of_calls=st.integers(1, 8),
    failure_rate_threshold_pct=st.integers(1, 100),
    slow_call_rate_threshold_pct=st.integers(1, 100),
    slow_call_duration_ms=st.just(SLOW_MS),
    wait_in_open_ms=st.integers(1, 40),
    permitted_number_of_calls_in_half_open_state=st.integers(1, 4),
    half_open_failure_rate_threshold_pct=st.none() | st.integers(1, 100),
)
# Mostly successes, so that half-open trials sometimes close the breaker.
kinds = st.sampled_from(["success", "success", "success", "failure", "slow"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 30 * MS), st.just("")),
        st.tuples(st.just("acquire"), st.just(0), st.just("")),
        st.tuples(st.just("report"), st.integers(0, 10), kinds),
        st.tuples(st.just("call"), st.just(0), kinds),
        st.tuples(st.just("release"), st.integers(0, 10), st.just("")),
    ),
    min_size=20,
    max_size=200,
)


@dataclass
class Model:
    """What the rules say the breaker holds, kept apart from the breaker's own bookkeeping."""

    config: BreakerSettings
    state: BreakerState = CLOSED
    period: int = 0  # transitions so far; an outcome counts only in the period that admitted it
    closed_calls: list[tuple[bool, bool]] = field(default_factory=list)
    open_until_us: int = 0
    trials_admitted: int = 0
    trial_calls: list[tuple[bool, bool]] = field(default_factory=list)

    def window(self) -> list[tuple[bool, bool]]:
        return self.closed_calls[-self.config.sliding_window_size :]

    def exceeds(self, calls: list[tuple[bool, bool]], failure_pct: int) -> bool:
        failed = sum(f for f, _ in calls)
        slow = sum(s for _, s in calls)
        return failed * 100 >= failure_pct * len(
            calls
        ) or slow * 100 >= self.config.slow_call_rate_threshold_pct * len(calls)

    def move(self, state: BreakerState, now_us: int) -> None:
        self.state, self.period = state, self.period + 1
        self.trials_admitted, self.trial_calls = 0, []
        if state is OPEN:
            self.open_until_us = now_us + self.config.wait_in_open_ms * MS
        if state is CLOSED:
            self.closed_calls = []


@dataclass
class Held:
    permit: Permit
    period: int


@settings(max_examples=300, deadline=None)
@given(config=breaker_settings, script=steps)
def test_invariants_hold_on_random_sequences(config: BreakerSettings, script):
    b, model = Breaker(config), Model(config)
    n = config.permitted_number_of_calls_in_half_open_state
    half_open_failure_pct = config.half_open_failure_rate_threshold_pct
    if half_open_failure_pct is None:
        half_open_failure_pct = config.failure_rate_threshold_pct
    now = 0
    held: list[Held] = []

    def acquire() -> Held | None:
        got = b.try_acquire(now)
        if model.state is OPEN and now < model.open_until_us:
            # Open never admits before the wait.
            assert got == Refused("open", model.open_until_us - now)
            return None
        if model.state is OPEN:
            event("open -> half_open")
            model.move(HALF_OPEN, now)
        if model.state is HALF_OPEN and model.trials_admitted == n:
            assert got == Refused("half_open_full")
            event("half-open refused a call")
            return None
        assert isinstance(got, Permit)
        assert got.is_trial is (model.state is HALF_OPEN)
        model.trials_admitted += got.is_trial
        return Held(got, model.period)

    def report(h: Held, kind: str) -> None:
        outcome = FAILURE if kind == "failure" else SUCCESS
        duration_us = SLOW_MS * MS + (kind == "slow")
        moved = b.report(h.permit, outcome, duration_us, now)
        call = (kind == "failure", kind == "slow")
        expected = None
        if h.period != model.period:
            event("late report ignored")
        elif model.state is CLOSED:
            model.closed_calls.append(call)
            window = model.window()
            judged = len(window) >= min(config.minimum_number_of_calls, config.sliding_window_size)
            if judged and model.exceeds(window, config.failure_rate_threshold_pct):
                expected = OPEN
        elif model.state is HALF_OPEN:
            model.trial_calls.append(call)
            if len(model.trial_calls) == n:
                reopen = model.exceeds(model.trial_calls, half_open_failure_pct)
                expected = OPEN if reopen else CLOSED
        assert moved is expected
        if expected is not None:
            event(f"{model.state} -> {expected}")
            model.move(expected, now)

    for op, arg, kind in script:
        if op == "advance":
            now += arg
        elif op == "acquire":
            if h := acquire():
                held.append(h)
        elif op == "call":
            if h := acquire():
                report(h, kind)
        elif op == "release" and held:
            h = held.pop(arg % len(held))
            b.release(h.permit)
            if h.permit.is_trial and h.period == model.period:
                model.trials_admitted -= 1
        elif op == "report" and held:
            report(held.pop(arg % len(held)), kind)

        # Never more than N trial permits outstanding in HALF_OPEN.
        outstanding = sum(h.permit.is_trial and h.period == model.period for h in held)
        assert outstanding + len(model.trial_calls) == model.trials_admitted <= n
        snap = b.snapshot(now)
        assert snap.state is model.state or (
            model.state is OPEN and now >= model.open_until_us and snap.state is HALF_OPEN
        )
        if snap.state is HALF_OPEN:
            assert snap.trial_calls_left == n - model.trials_admitted
        if snap.state is OPEN:
            assert snap.half_open_in_us == model.open_until_us - now > 0
        if snap.state is CLOSED:
            # Rates are computed only over the window.
            window = model.window()
            assert snap.calls_in_window == len(window) <= config.sliding_window_size
            assert snap.failed_calls == sum(f for f, _ in window)
            assert snap.slow_calls == sum(s for _, s in window)
            if len(window) >= min(config.minimum_number_of_calls, config.sliding_window_size):
                assert snap.failure_rate_pct == snap.failed_calls * 100 / len(window)
                assert snap.slow_call_rate_pct == snap.slow_calls * 100 / len(window)
            else:
                assert snap.failure_rate_pct is None and snap.slow_call_rate_pct is None
