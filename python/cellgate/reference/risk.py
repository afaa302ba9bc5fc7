"""Risk scoring as the core states it in ``rust/risk.rs``, in plain Python.

A request's score is the customer's base risk plus the weight of every factor that fires, clamped
to [0, 1]; the thresholds turn it into LOW, MEDIUM or HIGH. The settings are the JSON shape the core
reads (``RiskSettings``), already validated by it; this module does not repeat the validation.

Arithmetic is in whole points of 1/10 000, as in the core, so that 0.7 + 0.1 reaches a 0.8 threshold
(in floating point it is 0.7999999999999999). Text comparisons fold ASCII case only, as the core
does, which is why they are made on UTF-8 bytes.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

POINTS_PER_UNIT = 10_000
SECONDS_PER_DAY = 86_400
LEVELS = ("LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True)
class Request:
    """What scoring reads of a request: client address (or None), method, path and User-Agent."""

    client: str | None
    method: str
    path: str
    user_agent: str | None


@dataclass(frozen=True)
class FiredFactor:
    """One factor that fired: its kind, name (a network list's own name), weight and reason."""

    kind: str
    name: str
    weight_points: int
    reason: str


@dataclass(frozen=True)
class Assessment:
    """The score in points, its level and the fired factors in configuration order."""

    score_points: int
    level: str
    fired: tuple[FiredFactor, ...]

    @property
    def score(self) -> float:
        """The score as a fraction in [0, 1]."""
        return self.score_points / POINTS_PER_UNIT


def round_half_away(value: float) -> int:
    """Rounds a non-negative number to the nearest integer, halves up (Rust's ``f64::round``)."""
    whole = math.floor(value)
    return whole + (1 if value - whole >= 0.5 else 0)


def to_points(value: float) -> int:
    """A weight or threshold (in [0, 1], at most four decimals) in points."""
    scaled = value * POINTS_PER_UNIT
    if not 0.0 <= value <= 1.0 or abs(scaled - round_half_away(scaled)) > 1e-6:
        raise ValueError(f"not a weight in [0, 1] with at most four decimals: {value}")
    return round_half_away(scaled)


def base_points(base_risk: float) -> int:
    """A profile's base risk in points: clamped into [0, 1] (NaN is 0), read as the core's f32."""
    if math.isnan(base_risk):
        return 0
    clamped = min(max(base_risk, 0.0), 1.0)
    as_f32 = struct.unpack("f", struct.pack("f", clamped))[0]
    return min(round_half_away(as_f32 * POINTS_PER_UNIT), POINTS_PER_UNIT)


def client_address(client: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address as scored: an IPv4-mapped IPv6 address is the IPv4 address it maps."""
    address = ipaddress.ip_address(client)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def path_matcher(pattern: str) -> re.Pattern[bytes]:
    """A whole-path matcher for a pattern: ``*`` matches any run of bytes, ASCII case folded."""
    parts = (re.escape(part) for part in pattern.encode().split(b"*"))
    return re.compile(b".*".join(parts), re.IGNORECASE | re.DOTALL)


def clock_text(seconds_of_day: int) -> str:
    """Seconds of the day as ``HH:MM``."""
    return f"{seconds_of_day // 3600:02}:{seconds_of_day // 60 % 60:02}"


def time_of_day_s(text: str) -> int:
    """``"HH:MM"`` as seconds of the day."""
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class RiskModel:
    """The core's risk scoring over one ``RiskSettings`` mapping (as decoded from its JSON)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.networks = [
            (
                network_list["name"],
                to_points(network_list["weight"]),
                [ipaddress.ip_network(cidr) for cidr in network_list["cidrs"]],
            )
            for network_list in settings.get("high_risk_networks", [])
        ]
        self.unusual_hours = settings.get("unusual_hours")
        self.money_paths = settings.get("money_paths")
        self.user_agents = settings.get("suspicious_user_agents")
        self.medium_points = to_points(settings["thresholds"]["medium"])
        self.high_points = to_points(settings["thresholds"]["high"])
        self.zones: dict[str, list[list[int]]] = settings.get("zones", {})
        self.path_matchers = [
            path_matcher(pattern) for pattern in (self.money_paths or {}).get("patterns", [])
        ]

    def offset_s(self, zone: str | None, now_s: int) -> int:
        """The UTC offset of `zone` (UTC when None) at `now_s`, by the zone's table."""
        if zone is None:
            return 0
        table = self.zones[zone]
        starts = [start_s for start_s, _ in table]
        after = bisect.bisect_right(starts, now_s)
        return table[max(after - 1, 0)][1]

    def assess(
        self, base_risk: float, request: Request, zone: str | None, now_s: int
    ) -> Assessment:
        """Scores `request` at `now_s` (Unix seconds) for a customer of `base_risk` in `zone`."""
        fired: list[FiredFactor] = []

        if request.client is not None:
            client = client_address(request.client)
            for name, weight, networks in self.networks:
                if any(client in network for network in networks):
                    fired.append(
                        FiredFactor(
                            "high_risk_network", name, weight, f"client {client} is in {name}"
                        )
                    )

        if self.unusual_hours is not None:
            start_s = time_of_day_s(self.unusual_hours["start"])
            end_s = time_of_day_s(self.unusual_hours["end"])
            local_s = (now_s + self.offset_s(zone, now_s)) % SECONDS_PER_DAY
            if start_s < end_s:
                inside = start_s <= local_s < end_s
            else:  # the window wraps midnight
                inside = local_s >= start_s or local_s < end_s
            if inside:
                when = f"{clock_text(local_s)} " + (
                    f"local time ({zone})" if zone is not None else "UTC"
                )
                window = f"{clock_text(start_s)}-{clock_text(end_s)}"
                fired.append(
                    FiredFactor(
                        "unusual_hour",
                        "unusual_hour",
                        to_points(self.unusual_hours["weight"]),
                        f"{when} is within {window}",
                    )
                )

        if self.money_paths is not None:
            methods = self.money_paths.get("methods")
            method_counts = methods is None or request.method.encode().upper() in (
                method.encode().upper() for method in methods
            )
            path = request.path
            decoded = path.encode()
            if method_counts:
                for pattern, matcher in zip(
                    self.money_paths["patterns"], self.path_matchers, strict=True
                ):
                    if matcher.fullmatch(decoded):
                        fired.append(
                            FiredFactor(
                                "money_path",
                                "money_path",
                                to_points(self.money_paths["weight"]),
                                f"{request.method} {path} matches {pattern}",
                            )
                        )
                        break

        if self.user_agents is not None:
            agent = request.user_agent
            if agent is None or not agent.strip(" \t\n\x0c\r"):
                missing_weight = self.user_agents.get("missing_weight")
                if missing_weight is not None:
                    fired.append(
                        FiredFactor(
                            "missing_user_agent",
                            "missing_user_agent",
                            to_points(missing_weight),
                            "no user agent",
                        )
                    )
            else:
                for pattern in self.user_agents["patterns"]:
                    lowered = pattern.encode().lower()
                    if lowered in agent.encode().lower():
                        fired.append(
                            FiredFactor(
                                "suspicious_user_agent",
                                "suspicious_user_agent",
                                to_points(self.user_agents["weight"]),
                                f'user agent contains "{lowered.decode()}"',
                            )
                        )
                        break

        total = base_points(base_risk) + sum(factor.weight_points for factor in fired)
        score_points = min(total, POINTS_PER_UNIT)
        if score_points >= self.high_points:
            level = "HIGH"
        elif score_points >= self.medium_points:
            level = "MEDIUM"
        else:
            level = "LOW"
        return Assessment(score_points, level, tuple(fired))
