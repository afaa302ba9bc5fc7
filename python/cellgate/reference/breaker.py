"""Per-cell circuit breaker with Resilience4j's semantics: the reference for ``rust/breaker.rs``.

CLOSED keeps the outcomes of the last ``sliding_window_size`` reported calls. Once at least
``minimum_number_of_calls`` are recorded (clamped to the window size, as Resilience4j does), the
breaker opens when the failure rate or the slow-call rate is at or above its threshold. A call is
slow when it took longer than ``slow_call_duration_ms``; a slow failure counts as both. OPEN
refuses every call until ``wait_in_open_ms`` has passed; the next ``try_acquire`` after that moves
it to HALF_OPEN. HALF_OPEN admits exactly ``permitted_number_of_calls_in_half_open_state`` trial
calls and refuses the rest; when all of them have reported, their rates decide: at or above a
threshold re-opens (a new wait), below closes with a fresh window.

Time is never read here: every call takes ``now_us``, microseconds from the caller's clock.

The consecutive-failure form ("5 failures in a row open it, 30 s open, 3 successes close it") is
``BreakerSettings.consecutive_failures(5, 30_000, 3)``: a window of 5 calls that judges only when
full and opens at 100 % failures opens exactly on the fifth failure in a row, and a half-open
failure-rate threshold of 1 % re-opens on any failure among the 3 trial calls. That half-open
threshold (``half_open_failure_rate_threshold_pct``, defaulting to the closed one) is the one
setting added to Resilience4j's, which has a single ``failureRateThreshold`` for both states.

Where this differs from Resilience4j (the Rust module's doc says the same):

- HALF_OPEN decides once all permitted trial calls have reported; Resilience4j decides after
  ``min(minimumNumberOfCalls, permittedNumberOfCallsInHalfOpenState)`` of them, the same whenever
  the minimum is at least the number of trial calls.
- An outcome counts only in the state period that admitted it: a late report from a call admitted
  before a transition is ignored.
- Thresholds are whole percentages compared exactly (``failed * 100 >= threshold * calls``).
- A permit given back unreported (``Breaker.release``, the Rust permit's drop) frees its half-open
  slot, so a lost trial call cannot wedge the breaker.
- ``state`` and ``snapshot`` report OPEN past its wait as HALF_OPEN without moving the breaker.

This reference keeps the window as a plain list and counts it on demand; the Rust module keeps a
ring with running counts.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "MAX_SLIDING_WINDOW_SIZE",
    "Breaker",
    "BreakerSettings",
    "BreakerSettingsError",
    "BreakerSnapshot",
    "BreakerState",
    "Outcome",
    "Permit",
    "Refused",
    "settings_from_dict",
]

MAX_SLIDING_WINDOW_SIZE = 1 << 20
"""The largest ``sliding_window_size`` accepted (the Rust ring holds one byte per call)."""


class BreakerState(enum.StrEnum):
    """The breaker's state, as Resilience4j names it."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(enum.Enum):
    """How a permitted call ended; whether it was slow follows from its duration."""

    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class BreakerSettings:
    """A breaker's configuration: Resilience4j's names in snake_case, its defaults, units named."""

    sliding_window_size: int = 100
    minimum_number_of_calls: int = 100
    failure_rate_threshold_pct: int = 50
    slow_call_rate_threshold_pct: int = 100
    slow_call_duration_ms: int = 60_000
    wait_in_open_ms: int = 60_000
    permitted_number_of_calls_in_half_open_state: int = 10
    half_open_failure_rate_threshold_pct: int | None = None

    @classmethod
    def consecutive_failures(
        cls, failures: int, wait_in_open_ms: int, successes: int
    ) -> BreakerSettings:
        """``failures`` in a row open it; after the wait, ``successes`` trial calls must all
        succeed to close it (any failure among them re-opens)."""
        return cls(
            sliding_window_size=failures,
            minimum_number_of_calls=failures,
            failure_rate_threshold_pct=100,
            wait_in_open_ms=wait_in_open_ms,
            permitted_number_of_calls_in_half_open_state=successes,
            half_open_failure_rate_threshold_pct=1,
        )

    def validate(self, path: str = "breaker") -> list[str]:
        """Every invalid field as ``path.field: message``; empty when all are valid."""
        errors: list[str] = []

        def fail(name: str, message: str) -> None:
            errors.append(f"{path}.{name}: {message}" if path else f"{name}: {message}")

        if self.sliding_window_size <= 0:
            fail("sliding_window_size", "must be > 0")
        elif self.sliding_window_size > MAX_SLIDING_WINDOW_SIZE:
            fail("sliding_window_size", f"must be <= {MAX_SLIDING_WINDOW_SIZE}")
        if self.minimum_number_of_calls <= 0:
            fail("minimum_number_of_calls", "must be > 0")
        for name in (
            "failure_rate_threshold_pct",
            "slow_call_rate_threshold_pct",
            "half_open_failure_rate_threshold_pct",
        ):
            pct = getattr(self, name)
            if pct is not None and not 1 <= pct <= 100:
                fail(name, "must be between 1 and 100")
        for name in (
            "slow_call_duration_ms",
            "wait_in_open_ms",
            "permitted_number_of_calls_in_half_open_state",
        ):
            if getattr(self, name) <= 0:
                fail(name, "must be > 0")
        return errors


class BreakerSettingsError(ValueError):
    """Invalid breaker settings; ``errors`` lists every one with its dotted path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Refused:
    """Why a call was not admitted: ``open`` (with the wait left) or ``half_open_full``."""

    reason: Literal["open", "half_open_full"]
    half_open_in_us: int | None = None


@dataclass(eq=False)
class Permit:
    """Leave to make one call; report it, or release it to give a trial slot back."""

    owner: Breaker
    period: int
    is_trial: bool
    settled: bool = False


@dataclass(frozen=True)
class BreakerSnapshot:
    """What a breaker holds and why, for explanations and metrics."""

    state: BreakerState
    failure_rate_pct: float | None
    slow_call_rate_pct: float | None
    calls_in_window: int
    failed_calls: int
    slow_calls: int
    half_open_in_us: int | None
    trial_calls_left: int | None


@dataclass(frozen=True)
class _Call:
    failed: bool
    slow: bool


def _exceeds(calls: list[_Call], failure_pct: int, slow_pct: int) -> bool:
    failed = sum(call.failed for call in calls)
    slow = sum(call.slow for call in calls)
    return failed * 100 >= failure_pct * len(calls) or slow * 100 >= slow_pct * len(calls)


@dataclass(eq=False)
class Breaker:
    """A circuit breaker for one cell (single-threaded; the Rust one is shared across threads)."""

    settings: BreakerSettings
    phase: BreakerState = field(default=BreakerState.CLOSED, init=False)
    half_open_at_us: int = field(default=0, init=False)
    # Bumped on every transition; an outcome counts only in the period that admitted it.
    period: int = field(default=0, init=False)
    window: list[_Call] = field(default_factory=list, init=False)
    trials_admitted: int = field(default=0, init=False)
    trials: list[_Call] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        errors = self.settings.validate("breaker")
        if errors:
            raise BreakerSettingsError(errors)

    @property
    def minimum_calls(self) -> int:
        """``minimum_number_of_calls`` clamped to the window size, as Resilience4j does."""
        return min(self.settings.minimum_number_of_calls, self.settings.sliding_window_size)

    @property
    def half_open_failure_pct(self) -> int:
        """The trial calls' failure-rate threshold."""
        pct = self.settings.half_open_failure_rate_threshold_pct
        return self.settings.failure_rate_threshold_pct if pct is None else pct

    def _transition(self, phase: BreakerState, now_us: int = 0) -> None:
        self.phase = phase
        self.period += 1
        self.trials_admitted = 0
        self.trials = []
        if phase is BreakerState.OPEN:
            self.half_open_at_us = now_us + self.settings.wait_in_open_ms * 1000
        if phase is BreakerState.CLOSED:
            self.window = []

    def try_acquire(self, now_us: int) -> Permit | Refused:
        """Asks leave for one call at ``now_us``; OPEN past its wait becomes HALF_OPEN here."""
        if self.phase is BreakerState.CLOSED:
            return Permit(self, self.period, is_trial=False)
        if self.phase is BreakerState.OPEN:
            if now_us < self.half_open_at_us:
                return Refused("open", self.half_open_at_us - now_us)
            self._transition(BreakerState.HALF_OPEN)
        if self.trials_admitted >= self.settings.permitted_number_of_calls_in_half_open_state:
            return Refused("half_open_full")
        self.trials_admitted += 1
        return Permit(self, self.period, is_trial=True)

    def release(self, permit: Permit) -> None:
        """Gives an unreported permit back (the Rust permit's drop): frees its trial slot."""
        if permit.settled:
            return
        permit.settled = True
        if (
            permit.is_trial
            and permit.owner is self
            and self.phase is BreakerState.HALF_OPEN
            and permit.period == self.period
        ):
            self.trials_admitted -= 1

    def report(
        self, permit: Permit, outcome: Outcome, duration_us: int, now_us: int
    ) -> BreakerState | None:
        """Records how a permitted call ended; returns the new state when this report moved it.

        A permit from another breaker, or from an earlier state period, changes nothing.
        """
        if permit.settled:
            raise ValueError("this permit was already reported or released")
        if permit.owner is not self:
            permit.owner.release(permit)
            return None
        permit.settled = True
        if permit.period != self.period:
            return None
        call = _Call(
            failed=outcome is Outcome.FAILURE,
            slow=duration_us > self.settings.slow_call_duration_ms * 1000,
        )
        if self.phase is BreakerState.CLOSED:
            self.window = [*self.window, call][-self.settings.sliding_window_size :]
            if len(self.window) >= self.minimum_calls and _exceeds(
                self.window,
                self.settings.failure_rate_threshold_pct,
                self.settings.slow_call_rate_threshold_pct,
            ):
                self._transition(BreakerState.OPEN, now_us)
                return BreakerState.OPEN
            return None
        # HALF_OPEN: a permit of this period is one of its trial calls.
        self.trials.append(call)
        if len(self.trials) < self.settings.permitted_number_of_calls_in_half_open_state:
            return None
        if _exceeds(
            self.trials, self.half_open_failure_pct, self.settings.slow_call_rate_threshold_pct
        ):
            self._transition(BreakerState.OPEN, now_us)
            return BreakerState.OPEN
        self._transition(BreakerState.CLOSED)
        return BreakerState.CLOSED

    def state(self, now_us: int) -> BreakerState:
        """The state the next call would find at ``now_us``; moves nothing."""
        if self.phase is BreakerState.OPEN and now_us >= self.half_open_at_us:
            return BreakerState.HALF_OPEN
        return self.phase

    def snapshot(self, now_us: int) -> BreakerSnapshot:
        """State, rates and counts at ``now_us``, for explanations; moves nothing."""
        state = self.state(now_us)
        trial_calls = self.settings.permitted_number_of_calls_in_half_open_state
        if state is BreakerState.HALF_OPEN:
            # OPEN past its wait has no trial calls yet.
            calls = self.trials if self.phase is BreakerState.HALF_OPEN else []
            admitted = self.trials_admitted if self.phase is BreakerState.HALF_OPEN else 0
            minimum, trial_calls_left = trial_calls, trial_calls - admitted
        else:
            calls, minimum, trial_calls_left = self.window, self.minimum_calls, None
        failed = sum(call.failed for call in calls)
        slow = sum(call.slow for call in calls)
        judged = len(calls) > 0 and len(calls) >= minimum
        return BreakerSnapshot(
            state=state,
            failure_rate_pct=failed * 100 / len(calls) if judged else None,
            slow_call_rate_pct=slow * 100 / len(calls) if judged else None,
            calls_in_window=len(calls),
            failed_calls=failed,
            slow_calls=slow,
            half_open_in_us=self.half_open_at_us - now_us if state is BreakerState.OPEN else None,
            trial_calls_left=trial_calls_left,
        )


#: The fields the consecutive form stands for.
WINDOW_FIELDS = (
    "sliding_window_size",
    "minimum_number_of_calls",
    "failure_rate_threshold_pct",
    "permitted_number_of_calls_in_half_open_state",
    "half_open_failure_rate_threshold_pct",
)


def settings_from_dict(raw: dict[str, object]) -> BreakerSettings:
    """Settings from the JSON shape the core decodes, the consecutive form
    (``consecutive_failures`` with ``successes_to_close``) included; unknown fields and a mix of
    the two forms are an error, as there."""
    fields = dict(raw)
    failures = fields.pop("consecutive_failures", None)
    successes = fields.pop("successes_to_close", None)
    names = {f.name for f in dataclasses.fields(BreakerSettings)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise BreakerSettingsError([f"breaker.{name}: unknown field" for name in unknown])
    if failures is None and successes is None:
        return BreakerSettings(**fields)  # type: ignore[arg-type]
    if failures is None or successes is None or any(name in fields for name in WINDOW_FIELDS):
        raise BreakerSettingsError(["breaker: the consecutive form stands alone"])
    wait = fields.pop("wait_in_open_ms", BreakerSettings.wait_in_open_ms)
    consecutive = BreakerSettings.consecutive_failures(failures, wait, successes)  # type: ignore[arg-type]
    return dataclasses.replace(consecutive, **fields)  # type: ignore[arg-type]
