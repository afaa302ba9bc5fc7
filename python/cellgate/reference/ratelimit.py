"""Per-customer GCRA rate limiting, and the RateLimit, RateLimit-Policy and Retry-After fields.

The reference of ``rust/ratelimit.rs``: the same rules, in plain Python, with the same numbers.

A quota allows ``requests`` per ``period_s`` seconds and at most ``burst`` at once. The generic
cell rate algorithm keeps one number per customer, its theoretical arrival time (TAT). With the
emission interval ``T = period_s / requests`` and the burst tolerance ``tau = (burst - 1) * T``, a
request at ``now`` conforms when ``now >= TAT - tau``, and then ``TAT = max(TAT, now) + T``; a
request that does not conform changes nothing.

Time comes in as ``now_us`` (microseconds since an arbitrary epoch) and is kept in integer
nanoseconds; ``T`` is rounded up to the next nanosecond so that rounding never admits more than
the quota. (The core saturates its sums at 2**64 - 1 ns, about 584 years after the epoch; Python
integers do not, which only matters past that.)

The fields follow draft-ietf-httpapi-ratelimit-headers-11 (23 May 2026):
``RateLimit-Policy: "<tier>";q=<requests>;w=<period_s>`` and
``RateLimit: "<tier>";r=<remaining>;t=<seconds>``, where ``t`` is the seconds until the bucket is
full again, or on a limited response the Retry-After delay (§6: Retry-After SHOULD NOT point
earlier than the end of the effective window). ``Retry-After`` is RFC 9110 delay-seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

NS_PER_US = 1_000
NS_PER_S = 1_000_000_000
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
QUOTA_FIELDS = ("requests", "period_s", "burst")


def ceil_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded up, for non-negative integers."""
    return -(-numerator // denominator)


@dataclass(frozen=True)
class Quota:
    """A tier's quota: ``requests`` per ``period_s`` seconds, at most ``burst`` at once."""

    name: str
    requests: int
    period_s: int
    burst: int

    @property
    def emission_ns(self) -> int:
        """The emission interval T in nanoseconds, ``period_s / requests`` rounded up."""
        return ceil_div(self.period_s * NS_PER_S, self.requests)

    @property
    def tolerance_ns(self) -> int:
        """The burst tolerance tau in nanoseconds, ``(burst - 1) * T``."""
        return (self.burst - 1) * self.emission_ns


def quota_errors(name: str, settings: Mapping[str, object], path: str) -> list[str]:
    """Every problem with tier ``name``'s quota, as ``<path>.<field>: message`` (the core's
    ``Quota::new``), with ``path`` where the quota was configured."""
    errors = []
    if not name or not all(0x20 <= ord(ch) <= 0x7E for ch in name):
        errors.append(
            f"{path}: a tier name must be non-empty printable ASCII (it names the RateLimit policy)"
        )
    # What serde rejects before the core's own checks: unknown, missing and mistyped fields.
    if not isinstance(settings, Mapping):
        return [*errors, f"{path}: must be an object"]
    shape_errors = [f"{path}.{key}: unknown field" for key in settings if key not in QUOTA_FIELDS]
    for key in QUOTA_FIELDS:
        value = settings.get(key)
        if value is None:
            shape_errors.append(f"{path}.{key}: missing")
        elif type(value) is not int or not 0 <= value <= U32_MAX:
            shape_errors.append(f"{path}.{key}: must be an integer from 0 to {U32_MAX}")
    if shape_errors:
        return errors + shape_errors
    if settings["requests"] == 0:
        errors.append(f"{path}.requests: must be > 0")
    if settings["period_s"] == 0:
        errors.append(f"{path}.period_s: must be > 0")
    if settings["burst"] == 0:
        errors.append(f"{path}.burst: must be >= 1")
    if errors:
        return errors
    quota = Quota(name, settings["requests"], settings["period_s"], settings["burst"])
    if quota.tolerance_ns + quota.emission_ns > U64_MAX:
        errors.append(f"{path}.burst: burst * period_s / requests is too long (over 584 years)")
    return errors


@dataclass(frozen=True)
class Verdict:
    """What the limiter decided for one request.

    ``limit`` is the quota's burst. Allowed: ``remaining`` more requests would conform right now.
    Limited: ``retry_after_s`` (at least 1) whole seconds until this request would conform.
    ``reset_s``: whole seconds until the bucket is full again. Seconds are rounded up.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int | None = None


@dataclass
class RateLimiter:
    """Per-customer GCRA state: one TAT in nanoseconds per customer id."""

    tat_ns: dict[str, int] = field(default_factory=dict)

    def check(self, customer: str, quota: Quota, now_us: int) -> Verdict:
        """Decides one request of ``customer`` under ``quota`` at ``now_us``, counted if allowed."""
        now_ns = now_us * NS_PER_US
        tat_ns = self.tat_ns.get(customer, now_ns)
        conforms_at_ns = tat_ns - quota.tolerance_ns
        if now_ns < conforms_at_ns:
            return Verdict(
                allowed=False,
                limit=quota.burst,
                remaining=0,
                reset_s=ceil_div(tat_ns - now_ns, NS_PER_S),
                retry_after_s=ceil_div(conforms_at_ns - now_ns, NS_PER_S),
            )
        new_tat_ns = max(tat_ns, now_ns) + quota.emission_ns
        self.tat_ns[customer] = new_tat_ns
        # Request k more (k >= 1) would conform now iff now >= new_tat + (k - 1) * T - tau.
        headroom_ns = now_ns + quota.tolerance_ns - new_tat_ns
        remaining = headroom_ns // quota.emission_ns + 1 if headroom_ns >= 0 else 0
        return Verdict(
            allowed=True,
            limit=quota.burst,
            remaining=remaining,
            reset_s=ceil_div(new_tat_ns - now_ns, NS_PER_S),
        )

    def evict_expired(self, now_us: int) -> int:
        """Drops every customer whose bucket is full at ``now_us``; returns how many went."""
        now_ns = now_us * NS_PER_US
        expired = [customer for customer, tat_ns in self.tat_ns.items() if tat_ns <= now_ns]
        for customer in expired:
            del self.tat_ns[customer]
        return len(expired)


def sf_string(value: str) -> str:
    """``value`` as an RFC 8941 sf-string: quoted, with ``"`` and ``\\`` escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_field(quota: Quota) -> str:
    """The ``RateLimit-Policy`` field value: ``"<tier>";q=<requests>;w=<period_s>``."""
    return f"{sf_string(quota.name)};q={quota.requests};w={quota.period_s}"


def ratelimit_field(quota: Quota, verdict: Verdict) -> str:
    """The ``RateLimit`` field value: ``"<tier>";r=<remaining>;t=<seconds>``.

    Allowed: ``t`` is the seconds until the bucket is full again. Limited: ``r=0`` and ``t`` is the
    Retry-After delay.
    """
    if verdict.allowed:
        remaining, window_s = verdict.remaining, verdict.reset_s
    else:
        remaining, window_s = 0, verdict.retry_after_s
    return f"{sf_string(quota.name)};r={remaining};t={window_s}"


def retry_after_field(verdict: Verdict) -> str | None:
    """The ``Retry-After`` value (delay-seconds, never 0) of a limited verdict; None if allowed."""
    return None if verdict.allowed else str(verdict.retry_after_s)
