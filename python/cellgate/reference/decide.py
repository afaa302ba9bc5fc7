"""The whole decision of ``Router.decide()`` (``rust/router.rs``) in plain Python: readable, not
fast. The oracle of ``tests/test_reference_agreement.py`` and the baseline of
``benches/test_decision_bench.py``.

A request is decided in the core's order and refused at the first rule it breaks:

1. the bearer token (:mod:`cellgate.reference.tokens`, the reference of ``rust/auth/``);
2. the customer's profile (404 ``customer_not_found``);
3. the tier's rate limit (:mod:`cellgate.reference.ratelimit`; 429 with Retry-After);
4. risk (:mod:`cellgate.reference.risk`) and, at HIGH, step-up proof (403 ``step_up_required``);
5. the cell (``rust/selection.rs``), or 503 ``no_eligible_cell`` naming why each cell of the
   region was passed over. Stages: PreferredMaximum (HIGH risk only: the tier's
   maximum-encryption cells), Primary (the tier and region), Fallback (any cell of the region,
   least loaded). A cell is eligible when its tier (not asked in Fallback), region, health,
   breaker (:mod:`cellgate.reference.breaker`: not OPEN) and compliance rules allow, asked in that
   order. The placement picks the least loaded (in-flight / capacity; ties go to the first cell
   scanning from a rotating start, a counter the core advances once per least-loaded pick, found
   or not) or the sticky cell (:mod:`cellgate.reference.rendezvous`). A breaker that refuses the
   picked cell a permit excludes it and the stage picks again.

The router is built from the same :class:`cellgate.config.Config` as the core, through the same
``compile_settings``, so both read one compiled configuration. Time comes from
:class:`ReferenceClock`, which rounds seconds as the core's manual ``Clock`` does. Single-threaded:
with one caller the core's rotation counter is deterministic, and so are its ties.

Not modelled: profile updates at run time, forwarding, and detail texts other than
``no_eligible_cell``'s (the others are the reference's own words).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cellgate.config import Config, compile_settings
from cellgate.reference import breaker as breakers
from cellgate.reference.ratelimit import Quota, RateLimiter, policy_field, ratelimit_field
from cellgate.reference.rendezvous import Rendezvous
from cellgate.reference.risk import Request as RiskRequest
from cellgate.reference.risk import RiskModel, round_half_away
from cellgate.reference.target import PathRefused, canonicalize
from cellgate.reference.tokens import Refusal, TokenVerifier

__all__ = ["ReferenceClock", "ReferenceDecision", "ReferenceRouter"]

ENCRYPTION_LEVELS = ("standard", "enhanced", "maximum")
AUTH_REASONS = (
    "missing_token",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "alg_not_allowed",
    "wrong_type",
    "unknown_kid",
    "missing_customer",
    "token_revoked",
)
#: The HTTP status of each reason code (``rust/reason.rs``).
STATUS = {
    **dict.fromkeys(AUTH_REASONS, 401),
    "bad_path": 400,
    "step_up_required": 403,
    "customer_not_found": 404,
    "rate_limited": 429,
    "no_eligible_cell": 503,
}
_SOCKET_V4 = re.compile(r"([0-9.]+):([0-9]+)")
_SOCKET_V6 = re.compile(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)")


class ReferenceClock:
    """A manual clock in whole microseconds, rounding seconds exactly as ``Clock.manual`` does."""

    def __init__(self, start_s: float) -> None:
        self.now_us = to_us(start_s)

    def now(self) -> float:
        """Seconds since the epoch."""
        return self.now_us / 1e6

    def set(self, t_s: float) -> None:
        """Sets the time to ``t_s`` seconds since the epoch."""
        self.now_us = to_us(t_s)

    def advance(self, dt_s: float) -> None:
        """Moves the time forward by ``dt_s`` seconds."""
        self.set((self.now_us + to_us(dt_s)) / 1e6)


def to_us(seconds: float) -> int:
    """Seconds as whole microseconds, halves away from zero (the core's ``(s * 1e6).round()``)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"time must be a finite number >= 0, got {seconds}")
    return round_half_away(seconds * 1e6)


@dataclass
class Route:
    """A routed request's hold on its cell: the slot and the breaker permit, until reported."""

    cell: Cell
    permit: breakers.Permit
    decided_us: int


@dataclass
class ReferenceDecision:
    """What ``decide`` answered, in the shape of the core's ``Decision``."""

    ok: bool
    status: int
    reason: str | None = None
    detail: str | None = None
    customer_id: str | None = None
    cell_id: str | None = None
    #: ``(score, level)`` when routed with risk scoring configured.
    risk: tuple[float, str] | None = None
    fields: list[tuple[str, str]] | None = None
    route: Route | None = None


@dataclass
class Cell:
    """One cell's facts and live state."""

    index: int
    id: str
    tier: str
    region: str
    capacity: int
    certifications: list[str]
    encryption: str
    breaker: breakers.Breaker
    healthy: bool = True
    in_flight: int = 0


def client_address(client: str) -> str | None:
    """The client's IP from ``1.2.3.4:5``, ``[::1]:5`` or a bare address, as the core parses it
    (a socket address first, then the text without its brackets; no IPv6 zone ids)."""
    match = _SOCKET_V4.fullmatch(client) or _SOCKET_V6.fullmatch(client)
    candidates = [match[1]] if match and int(match[2]) <= 0xFFFF else []
    candidates.append(client.strip("[]"))
    for text in candidates:
        try:
            return None if "%" in text else str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


def least_loaded(cells: list[Cell], start: int, usable: Callable[[Cell], bool]) -> Cell | None:
    """The usable cell with the lowest in-flight / capacity, scanning from ``start`` (mod n); a
    later cell replaces the best only when strictly less loaded (cross products, no division)."""
    best: Cell | None = None
    for offset in range(len(cells)):
        cell = cells[(start + offset) % len(cells)]
        if not usable(cell):
            continue
        if best is None or best.in_flight * cell.capacity > cell.in_flight * best.capacity:
            best = cell
    return best


class ReferenceRouter:
    """The core's router in plain Python: decide, report, release, cell health, revocations."""

    def __init__(
        self, config: Config, profiles: Iterable[Mapping[str, Any]], now_s: float = 0.0
    ) -> None:
        self.profiles = {p["customer_id"]: dict(p) for p in profiles}
        zones = {p["timezone"] for p in self.profiles.values() if p.get("timezone")}
        settings = json.loads(compile_settings(config, zones if config.risk else ()))
        self.clock = ReferenceClock(now_s)
        self.verifier = TokenVerifier(settings["jwt"])
        self.risk = RiskModel(settings["risk"]) if settings["risk"] else None
        self.paths = settings["paths"]
        self.quotas = {
            name: Quota(name, **tier["rate_limit"]) if tier["rate_limit"] else None
            for name, tier in settings["tiers"].items()
        }
        self.limiter = RateLimiter()
        self.placements = {name: tier["placement"] for name, tier in settings["tiers"].items()}
        # Rule i is the i-th flag in byte order (the core's BTreeMap).
        self.rules = sorted(settings["compliance"].items(), key=lambda rule: rule[0].encode())
        self.cells: list[Cell] = []
        for index, cell in enumerate(settings["cells"]):
            breaker_settings = breakers.settings_from_dict(cell["breaker"] or settings["breaker"])
            self.cells.append(
                Cell(
                    index=index,
                    id=cell["id"],
                    tier=cell["tier"],
                    region=cell["region"],
                    capacity=cell["capacity"],
                    certifications=cell["certifications"],
                    encryption=cell["encryption"],
                    breaker=breakers.Breaker(breaker_settings),
                )
            )
        # The candidates of each (tier, region), and of each region under the key (None, region).
        self.groups: dict[tuple[str | None, str], list[Cell]] = {}
        for cell in self.cells:
            self.groups.setdefault((cell.tier, cell.region), []).append(cell)
            self.groups.setdefault((None, cell.region), []).append(cell)
        self.sticky_tables = {
            (tier, region): Rendezvous([(c.id, c.capacity) for c in self.group(tier, region)])
            for tier, region in {(c.tier, c.region) for c in self.cells}
            if self.placements[tier] == "sticky"
        }
        self.rotation = 0

    def group(self, tier: str | None, region: str) -> list[Cell]:
        """The cells of one tier (any tier when None) and region, in configuration order."""
        return self.groups.get((tier, region), [])

    def cell(self, cell_id: str) -> Cell:
        """The cell named ``cell_id``; KeyError if there is none."""
        for cell in self.cells:
            if cell.id == cell_id:
                return cell
        raise KeyError(cell_id)

    def set_cell_health(self, cell_id: str, healthy: bool) -> None:
        """Marks a cell up or down."""
        self.cell(cell_id).healthy = healthy

    def revoke_token(self, jti: str, forget_after_s: int) -> None:
        """Refuses tokens with ``jti`` until the later of its forget times; entries past their
        time are forgotten on each change."""
        self._forget_revoked_tokens()
        known = self.verifier.revoked_jti
        known[jti] = max(forget_after_s, known.get(jti, forget_after_s))

    def revoke_customer(self, customer_id: str, issued_before_s: float) -> None:
        """Refuses the customer's tokens issued before ``issued_before_s`` (or without iat); a
        later cut-off stands against an earlier one (lift it to move it back)."""
        self._forget_revoked_tokens()
        known = self.verifier.revoked_customers
        known[customer_id] = max(issued_before_s, known.get(customer_id, issued_before_s))

    def lift_customer_revocation(self, customer_id: str) -> bool:
        """Lifts a customer's revocation; says whether there was one."""
        self._forget_revoked_tokens()
        return self.verifier.revoked_customers.pop(customer_id, None) is not None

    def _forget_revoked_tokens(self) -> None:
        now_s = self.clock.now_us // 1_000_000
        revoked = self.verifier.revoked_jti
        self.verifier.revoked_jti = {jti: t for jti, t in revoked.items() if t > now_s}

    def decide(
        self,
        method: str,
        path: str,
        authorization: str | None,
        client: str,
        user_agent: str | None = None,
    ) -> ReferenceDecision:
        """Decides where a request goes, or why it may not."""
        now_us = self.clock.now_us
        now_s = now_us // 1_000_000
        try:
            try:
                path = canonicalize(path, **self.paths).path
            except PathRefused as refused:
                raise Refusal("bad_path", str(refused)) from None
            verified = self.verifier.verify_header(authorization, now_s)
            profile = self.profiles.get(verified.customer)
            if profile is None:
                raise Refusal("customer_not_found", f"no profile for {verified.customer!r}")
            fields = self.rate_limit(verified.customer, profile["tier"], now_us)
            risk = None
            if self.risk is not None:
                request = RiskRequest(client_address(client), method, path, user_agent)
                risk = self.risk.assess(
                    profile.get("risk", 0.0), request, profile.get("timezone"), now_s
                )
            if risk is not None and risk.level == "HIGH":
                missing = self.verifier.step_up_missing(verified, now_s)
                if missing is not None:
                    raise Refusal("step_up_required", f"risk HIGH ({risk.score:.2f}); {missing}")
            prefer_maximum = risk is not None and risk.level == "HIGH"
            cell, permit = self.choose(verified.customer, profile, prefer_maximum, now_us)
        except Refusal as refusal:
            return ReferenceDecision(
                ok=False,
                status=STATUS[refusal.reason],
                reason=refusal.reason,
                detail=refusal.detail,
                fields=refusal.fields,
            )
        cell.in_flight += 1
        return ReferenceDecision(
            ok=True,
            status=200,
            customer_id=verified.customer,
            cell_id=cell.id,
            risk=None if risk is None else (risk.score, risk.level),
            fields=fields,
            route=Route(cell, permit, now_us),
        )

    def report(self, decision: ReferenceDecision, success: bool) -> bool:
        """Feeds a routed decision's outcome to its cell's breaker and frees its slot."""
        route, decision.route = decision.route, None
        if route is None:
            return False
        now_us = self.clock.now_us
        outcome = breakers.Outcome.SUCCESS if success else breakers.Outcome.FAILURE
        duration_us = max(now_us - route.decided_us, 0)
        route.cell.breaker.report(route.permit, outcome, duration_us, now_us)
        route.cell.in_flight -= 1
        return True

    def release(self, decision: ReferenceDecision) -> bool:
        """Frees a routed decision's slot and permit without an outcome (``Decision.release``)."""
        route, decision.route = decision.route, None
        if route is None:
            return False
        route.cell.breaker.release(route.permit)
        route.cell.in_flight -= 1
        return True

    def rate_limit(self, customer: str, tier: str, now_us: int) -> list[tuple[str, str]]:
        """The RateLimit fields of an admitted request, or a 429 :class:`Refusal`."""
        quota = self.quotas.get(tier)
        if quota is None:
            return []
        verdict = self.limiter.check(customer, quota, now_us)
        fields = [
            ("ratelimit-policy", policy_field(quota)),
            ("ratelimit", ratelimit_field(quota, verdict)),
        ]
        if verdict.allowed:
            return fields
        retry = [("retry-after", str(verdict.retry_after_s))]
        raise Refusal("rate_limited", f"over the {tier} quota", retry + fields)

    def exclusion(self, cell: Cell, profile: Mapping[str, Any], now_us: int, same_tier: bool):
        """Why ``cell`` cannot serve the profile's requests now (the first rule), or None."""
        if same_tier and cell.tier != profile["tier"]:
            return "serves another tier"
        if cell.region != profile["region"]:
            return "is in another region"
        if not cell.healthy:
            return "unhealthy"
        if cell.breaker.state(now_us) is breakers.BreakerState.OPEN:
            half_open_in_us = cell.breaker.snapshot(now_us).half_open_in_us or 0
            return f"breaker open (half-open in {-(-half_open_in_us // 1000)} ms)"
        flags = set(profile.get("flags", ()))
        for flag, rule in self.rules:
            if flag in flags and not self.meets(cell, rule):
                return f"not compliant: {flag} needs {self.describe(rule)}"
        return None

    @staticmethod
    def meets(cell: Cell, rule: Mapping[str, Any]) -> bool:
        """Whether ``cell`` offers what a compliance rule asks."""
        level = ENCRYPTION_LEVELS.index
        return (
            (rule["certification"] is None or rule["certification"] in cell.certifications)
            and (rule["region"] is None or rule["region"] == cell.region)
            and (rule["encryption"] is None or level(cell.encryption) >= level(rule["encryption"]))
        )

    @staticmethod
    def describe(rule: Mapping[str, Any]) -> str:
        """What a rule asks, as the core words it."""
        parts = [f"certification {rule['certification']}"] if rule["certification"] else []
        parts += [f"region {rule['region']}"] if rule["region"] else []
        parts += [f"encryption {rule['encryption']} or stronger"] if rule["encryption"] else []
        return ", ".join(parts)

    def choose(
        self, customer: str, profile: Mapping[str, Any], prefer_maximum: bool, now_us: int
    ) -> tuple[Cell, breakers.Permit]:
        """The chosen cell and the breaker permit taken on it, or a 503 :class:`Refusal`."""
        tier, region = profile["tier"], profile["region"]
        stages = [("preferred_maximum", self.placements[tier])] if prefer_maximum else []
        stages += [("primary", self.placements[tier]), ("fallback", "least_loaded")]
        refused: set[int] = set()
        for stage, placement in stages:
            candidates = self.group(None if stage == "fallback" else tier, region)

            def usable(cell: Cell, stage: str = stage) -> bool:
                return (
                    self.exclusion(cell, profile, now_us, same_tier=stage != "fallback") is None
                    and (stage != "preferred_maximum" or cell.encryption == "maximum")
                    and cell.index not in refused
                )

            while True:
                if placement == "least_loaded":
                    self.rotation += 1  # the core's counter moves once per pick, found or not
                    picked = least_loaded(candidates, self.rotation - 1, usable)
                else:
                    table = self.sticky_tables.get((tier, region))
                    picked = None
                    if table is not None:
                        index = table.choose(customer, lambda i, c=candidates: usable(c[i]))
                        picked = None if index is None else candidates[index]
                if picked is None:
                    break
                permit = picked.breaker.try_acquire(now_us)
                if isinstance(permit, breakers.Permit):
                    return picked, permit
                refused.add(picked.index)
        reasons = [
            f"{cell.id}: "
            + (
                self.exclusion(cell, profile, now_us, same_tier=False)
                # The core's words, which also cover a slot taken by another worker at once.
                or "refused a slot or a permit (its last slot or trial call taken at the same"
                " moment)"
            )
            for cell in self.group(None, region)
        ]
        raise Refusal(
            "no_eligible_cell",
            f"no eligible cell for a {tier} customer in region {region}, fallback included"
            f" ({'; '.join(reasons)})",
        )

    def in_flight(self) -> dict[str, tuple[int, bool]]:
        """Each cell's ``(in_flight, healthy)``, to compare with the core's ``cells()``."""
        return {cell.id: (cell.in_flight, cell.healthy) for cell in self.cells}
