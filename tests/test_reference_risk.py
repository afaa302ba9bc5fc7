"""The pure-Python risk reference (mirroring the Rust unit tests in rust/risk.rs, same numbers) and
the time zone tables the control plane compiles for the core, checked against zoneinfo itself."""

from __future__ import annotations

import dataclasses
import itertools
import random
import zoneinfo
from datetime import UTC, datetime

import pytest
from cellgate import timezones
from cellgate.reference.risk import POINTS_PER_UNIT, Request, RiskModel, base_points
from hypothesis import given, settings
from hypothesis import strategies as st

# The fixture pasted into rust/risk.rs: compile_zones([...], 2024, 2026).
ZONES_2024_2026 = {
    "Europe/Berlin": [
        [1704067200, 3600],
        [1711846800, 7200],
        [1729990800, 3600],
        [1743296400, 7200],
        [1761440400, 3600],
        [1774746000, 7200],
        [1792890000, 3600],
    ],
    "America/New_York": [
        [1704067200, -18000],
        [1710054000, -14400],
        [1730613600, -18000],
        [1741503600, -14400],
        [1762063200, -18000],
        [1772953200, -14400],
        [1793512800, -18000],
    ],
}

JAN_15_2025_S = 1_736_899_200  # 2025-01-15T00:00:00Z
HOUR_S = 3600
NOON_S = JAN_15_2025_S + 12 * HOUR_S


def risk_settings(unusual_hours: dict | None = None) -> dict:
    """The settings of the Rust tests."""
    return {
        "high_risk_networks": [
            {
                "name": "tor-exits",
                "weight": 0.3,
                "cidrs": ["203.0.113.0/24", "2001:db8:dead::/48", "198.51.100.7"],
            },
            {"name": "hosting", "weight": 0.1, "cidrs": ["203.0.113.128/25", "192.0.2.0/24"]},
        ],
        "unusual_hours": unusual_hours or {"start": "00:00", "end": "05:00", "weight": 0.1},
        "money_paths": {
            "weight": 0.1,
            "patterns": ["/api/transfers*", "/api/*/withdraw"],
            "methods": ["POST", "PUT", "PATCH", "DELETE"],
        },
        "suspicious_user_agents": {
            "weight": 0.3,
            "patterns": ["bot", "Crawler", "automated"],
            "missing_weight": 0.2,
        },
        "thresholds": {"medium": 0.5, "high": 0.8},
        "zones": ZONES_2024_2026,
    }


def quiet(client: str | None = "192.0.3.1", **changes: str | None) -> Request:
    """A request that fires nothing: no listed network, no money path, an ordinary browser."""
    request = Request(client=client, method="GET", path="/api/accounts", user_agent="Mozilla/5.0")
    return dataclasses.replace(request, **changes)


def fired_names(
    model: RiskModel, request: Request, zone: str | None = None, now_s: int = NOON_S
) -> list[str]:
    return [factor.name for factor in model.assess(0.0, request, zone, now_s).fired]


def one_list(*cidrs: str) -> RiskModel:
    return RiskModel(
        {
            "high_risk_networks": [{"name": "l", "weight": 0.2, "cidrs": list(cidrs)}],
            "thresholds": {"medium": 0.5, "high": 0.8},
        }
    )


# --- time zone tables ------------------------------------------------------------------------

ZONES_UNDER_TEST = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute daylight saving shift
    "Asia/Kathmandu",  # +05:45, changed in 1986
    "America/Sao_Paulo",  # daylight saving abolished in 2019
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Africa/Casablanca",  # daylight saving suspended each Ramadan
    "UTC",
]
FIRST_S = int(datetime(1970, 1, 1, tzinfo=UTC).timestamp())
END_S = int(datetime(2101, 1, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("name", ZONES_UNDER_TEST)
def test_tables_give_zoneinfos_offset_at_random_instants(name: str) -> None:
    zone = zoneinfo.ZoneInfo(name)
    table = timezones.transitions(name)
    rng = random.Random(name)
    for utc_s in [rng.randrange(FIRST_S, END_S) for _ in range(300)]:
        assert timezones.table_offset_s(table, utc_s) == timezones.offset_s_at(zone, utc_s), utc_s


@pytest.mark.parametrize("name", ZONES_UNDER_TEST)
def test_each_transition_is_the_first_second_of_its_offset(name: str) -> None:
    zone = zoneinfo.ZoneInfo(name)
    table = timezones.transitions(name)
    assert table[0] == (FIRST_S, timezones.offset_s_at(zone, FIRST_S))
    for (before_s, before_offset), (start_s, offset) in itertools.pairwise(table):
        assert before_s < start_s < END_S
        assert before_offset != offset
        assert timezones.offset_s_at(zone, start_s - 1) == before_offset
        assert timezones.offset_s_at(zone, start_s) == offset


def test_berlin_and_new_york_change_twice_a_year() -> None:
    assert len(timezones.transitions("Europe/Berlin", 2024, 2024)) == 3
    assert timezones.compile_zones(["Europe/Berlin", "America/New_York"], 2024, 2026) == (
        ZONES_2024_2026
    )
    # Berlin has kept summer time since 1980; 1970-1979 had none, 2100 ends in winter time.
    berlin = timezones.transitions("Europe/Berlin")
    assert berlin[1][0] == int(datetime(1980, 4, 6, 1, tzinfo=UTC).timestamp())
    assert berlin[-1][1] == 3600
    assert timezones.transitions("UTC") == [(0, 0)]


def test_an_unknown_zone_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        timezones.transitions("Mars/Olympus")
    for bad in ["", "../etc/passwd", "/etc/localtime", "europe berlin"]:
        with pytest.raises(ValueError, match="unknown time zone"):
            timezones.load_zone(bad)
    with pytest.raises(ValueError, match="'Mars/Olympus', 'Moon/Tycho'"):
        timezones.compile_zones(["Europe/Berlin", "Moon/Tycho", "Mars/Olympus"])
    with pytest.raises(ValueError, match="start_year 2030 is after end_year 2020"):
        timezones.transitions("UTC", 2030, 2020)


def test_a_table_holds_its_first_offset_before_it_and_its_last_after_it() -> None:
    new_york = ZONES_2024_2026["America/New_York"]
    assert timezones.table_offset_s(new_york, -(2**63)) == -18000
    assert timezones.table_offset_s(new_york, 1_704_067_199) == -18000
    assert timezones.table_offset_s(new_york, 2**63 - 1) == -18000
    assert timezones.table_offset_s(new_york, 1_772_953_200) == -14400


# --- the risk reference, mirroring rust/risk.rs's tests --------------------------------------


def test_a_quiet_request_fires_nothing() -> None:
    assessment = RiskModel(risk_settings()).assess(0.2, quiet(), None, NOON_S)
    assert (assessment.score_points, assessment.level, assessment.fired) == (2000, "LOW", ())


def test_ipv4_networks_match_from_first_to_last_address() -> None:
    model = RiskModel(risk_settings())
    assert fired_names(model, quiet("203.0.113.0")) == ["tor-exits"]
    assert fired_names(model, quiet("203.0.113.127")) == ["tor-exits"]
    assert fired_names(model, quiet("203.0.113.128")) == ["tor-exits", "hosting"]
    assert fired_names(model, quiet("203.0.113.255")) == ["tor-exits", "hosting"]
    assert fired_names(model, quiet("203.0.112.255")) == []
    assert fired_names(model, quiet("203.0.114.0")) == []
    assert fired_names(model, quiet("198.51.100.7")) == ["tor-exits"]
    assert fired_names(model, quiet("198.51.100.6")) == []
    assert fired_names(model, quiet("198.51.100.8")) == []


def test_ipv6_networks_match_from_first_to_last_address() -> None:
    model = RiskModel(risk_settings())
    assert fired_names(model, quiet("2001:db8:dead::")) == ["tor-exits"]
    assert fired_names(model, quiet("2001:db8:dead:ffff:ffff:ffff:ffff:ffff")) == ["tor-exits"]
    assert fired_names(model, quiet("2001:db8:deac:ffff:ffff:ffff:ffff:ffff")) == []
    assert fired_names(model, quiet("2001:db8:deae::")) == []


def test_prefix_zero_holds_its_whole_family_only() -> None:
    v4_all = one_list("0.0.0.0/0")
    assert fired_names(v4_all, quiet("0.0.0.0")) == ["l"]
    assert fired_names(v4_all, quiet("255.255.255.255")) == ["l"]
    assert fired_names(v4_all, quiet("::1")) == []
    v6_all = one_list("::/0")
    assert fired_names(v6_all, quiet("::")) == ["l"]
    assert fired_names(v6_all, quiet("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) == ["l"]
    assert fired_names(v6_all, quiet("10.0.0.1")) == []
    assert fired_names(v6_all, quiet("::ffff:10.0.0.1")) == []


def test_prefix_128_is_one_host() -> None:
    model = one_list("2001:db8::7/128", "2001:db8::9")
    assert fired_names(model, quiet("2001:db8::7")) == ["l"]
    assert fired_names(model, quiet("2001:db8::9")) == ["l"]
    for other in ["2001:db8::6", "2001:db8::8", "2001:db8::a"]:
        assert fired_names(model, quiet(other)) == []


def test_ipv4_mapped_clients_match_ipv4_lists() -> None:
    model = RiskModel(risk_settings())
    fired = model.assess(0.0, quiet("::ffff:203.0.113.9"), None, NOON_S).fired
    assert [factor.reason for factor in fired] == ["client 203.0.113.9 is in tor-exits"]
    assert fired_names(model, quiet("::203.0.113.9")) == []


def test_an_unknown_client_fires_no_network() -> None:
    assert fired_names(one_list("0.0.0.0/0", "::/0"), quiet(None)) == []


def hour_fires(model: RiskModel, zone: str | None, now_s: int) -> bool:
    return "unusual_hour" in fired_names(model, quiet(), zone, now_s)


def test_the_window_starts_inclusive_and_ends_exclusive_in_utc() -> None:
    model = RiskModel(risk_settings())
    day = JAN_15_2025_S
    assert hour_fires(model, None, day)
    assert hour_fires(model, None, day + 5 * HOUR_S - 1)
    assert not hour_fires(model, None, day + 5 * HOUR_S)
    assert not hour_fires(model, None, day - 1)
    assert hour_fires(model, None, -HOUR_S * 24 * 365 + 60)
    assert not hour_fires(model, None, -1)


def test_a_window_may_wrap_midnight() -> None:
    model = RiskModel(risk_settings({"start": "23:00", "end": "06:00", "weight": 0.1}))
    day = JAN_15_2025_S
    assert hour_fires(model, None, day + 23 * HOUR_S)
    assert not hour_fires(model, None, day + 23 * HOUR_S - 1)
    assert hour_fires(model, None, day)
    assert hour_fires(model, None, day + 6 * HOUR_S - 1)
    assert not hour_fires(model, None, day + 6 * HOUR_S)
    assert not hour_fires(model, None, NOON_S)


def test_berlin_local_time_follows_daylight_saving() -> None:
    model = RiskModel(risk_settings())
    berlin = "Europe/Berlin"
    day = JAN_15_2025_S
    assert hour_fires(model, berlin, day + 4 * HOUR_S - 1)
    assert not hour_fires(model, berlin, day + 4 * HOUR_S)
    assert hour_fires(model, berlin, day - HOUR_S)
    assert not hour_fires(model, berlin, day - HOUR_S - 1)
    july_15 = 1_752_537_600
    assert hour_fires(model, berlin, july_15 + 3 * HOUR_S - 1)
    assert not hour_fires(model, berlin, july_15 + 3 * HOUR_S)
    assert hour_fires(model, berlin, july_15 - 2 * HOUR_S)
    assert not hour_fires(model, berlin, july_15 - 2 * HOUR_S - 1)
    spring = 1_743_296_400
    assert model.offset_s(berlin, spring - 1) == 3600
    assert model.offset_s(berlin, spring) == 7200
    assert hour_fires(model, berlin, spring + 2 * HOUR_S - 1)
    assert not hour_fires(model, berlin, spring + 2 * HOUR_S)
    assert hour_fires(model, berlin, spring + 2 * HOUR_S - 24 * HOUR_S)


def test_new_york_skips_and_repeats_an_hour() -> None:
    model = RiskModel(risk_settings({"start": "01:00", "end": "02:00", "weight": 0.1}))
    new_york = "America/New_York"
    spring = 1_741_503_600
    assert hour_fires(model, new_york, spring - HOUR_S)
    assert not hour_fires(model, new_york, spring)
    autumn = 1_762_063_200
    assert not hour_fires(model, new_york, autumn - HOUR_S - 1)
    assert hour_fires(model, new_york, autumn - HOUR_S)
    assert hour_fires(model, new_york, autumn - 1)
    assert hour_fires(model, new_york, autumn)
    assert hour_fires(model, new_york, autumn + HOUR_S - 1)
    assert not hour_fires(model, new_york, autumn + HOUR_S)


def money_fires(model: RiskModel, method: str, path: str) -> bool:
    return "money_path" in fired_names(model, quiet(method=method, path=path))


def test_money_paths_match_whole_paths_with_wildcards() -> None:
    model = RiskModel(risk_settings())
    for path in [
        "/api/transfers",
        "/api/transfers/42/confirm",
        "/api/accounts/7/withdraw",
        "/api/a/b/withdraw",
    ]:
        assert money_fires(model, "POST", path), path
    for path in [
        "/api/transfer",
        "/v2/api/transfers",
        "/api/withdraw",
        "/api/accounts/7/withdrawals",
        "/api/accounts",
    ]:
        assert not money_fires(model, "POST", path), path


def test_money_paths_apply_to_their_methods_only() -> None:
    model = RiskModel(risk_settings())
    assert not money_fires(model, "GET", "/api/transfers")
    assert not money_fires(model, "HEAD", "/api/transfers")
    assert money_fires(model, "DELETE", "/api/transfers/1")
    assert money_fires(model, "post", "/api/transfers")
    any_method = RiskModel(
        {
            "money_paths": {"weight": 0.1, "patterns": ["/pay"]},
            "thresholds": {"medium": 0.5, "high": 0.8},
        }
    )
    assert money_fires(any_method, "GET", "/pay")
    assert not money_fires(any_method, "GET", "/pay/")


def test_money_paths_ignore_case_and_take_the_canonical_path_as_text() -> None:
    model = RiskModel(risk_settings())
    assert money_fires(model, "POST", "/API/Transfers")
    assert money_fires(model, "POST", "/api/x/y/withdraw")
    # The canonical path is decoded already: an escape left in it is text, never decoded again.
    assert not money_fires(model, "POST", "/api/%74ransfers")
    assert not money_fires(model, "POST", "/api/accounts?/api/transfers")
    assert money_fires(model, "POST", "/api/transfers%")


def agent_fires(model: RiskModel, user_agent: str | None) -> list[str]:
    return fired_names(model, quiet(user_agent=user_agent))


def test_suspicious_agents_are_case_insensitive_substrings() -> None:
    model = RiskModel(risk_settings())
    for agent in ["Googlebot/2.1", "my-CRAWLER", "AutoMated tests"]:
        assert agent_fires(model, agent) == ["suspicious_user_agent"], agent
    assert agent_fires(model, "Mozilla/5.0 (Bo t)") == []
    assert agent_fires(model, "bo") == []
    assert agent_fires(model, "x" * 512 + "Bot") == ["suspicious_user_agent"]


def test_a_missing_or_blank_agent_is_its_own_factor() -> None:
    model = RiskModel(risk_settings())
    for agent in [None, "", " \t"]:
        assert agent_fires(model, agent) == ["missing_user_agent"]
    without = RiskModel(
        {
            "suspicious_user_agents": {"weight": 0.3, "patterns": ["bot"]},
            "thresholds": {"medium": 0.5, "high": 0.8},
        }
    )
    assert agent_fires(without, None) == []


EVERYTHING_FIRES = Request(
    client="203.0.113.200",
    method="POST",
    path="/api/transfers",
    user_agent="evil-bot/1.0",
)


def test_the_score_is_clamped_at_one() -> None:
    assessment = RiskModel(risk_settings()).assess(0.5, EVERYTHING_FIRES, None, JAN_15_2025_S)
    assert len(assessment.fired) == 5
    assert (assessment.score_points, assessment.score, assessment.level) == (10_000, 1.0, "HIGH")


def test_the_base_is_clamped_into_zero_to_one() -> None:
    assert base_points(-0.5) == 0
    assert base_points(1.5) == 10_000
    assert base_points(float("nan")) == 0
    assert base_points(float("inf")) == 10_000
    assert base_points(0.12345) == 1235


def test_levels_start_exactly_at_their_thresholds() -> None:
    model = RiskModel(risk_settings())
    money = quiet(method="POST", path="/api/transfers")

    def level(base: float, request: Request) -> str:
        return model.assess(base, request, None, NOON_S).level

    assert level(0.4999, quiet()) == "LOW"
    assert level(0.5, quiet()) == "MEDIUM"
    assert level(0.4, money) == "MEDIUM"
    assert level(0.7999, quiet()) == "MEDIUM"
    assert level(0.8, quiet()) == "HIGH"
    assert 0.7 + 0.1 < 0.8  # the floating-point trap the points avoid
    assert level(0.7, money) == "HIGH"
    assert model.assess(0.7, money, None, NOON_S).score_points == 8000


def test_a_zero_weight_factor_fires_without_counting() -> None:
    model = RiskModel(
        {
            "suspicious_user_agents": {"weight": 0, "patterns": ["bot"]},
            "thresholds": {"medium": 0, "high": 1},
        }
    )
    assessment = model.assess(0.25, quiet(user_agent="bot"), None, NOON_S)
    assert (assessment.score_points, assessment.level) == (2500, "MEDIUM")
    assert [factor.weight_points for factor in assessment.fired] == [0]


def test_every_fired_factor_is_explained() -> None:
    model = RiskModel(risk_settings())
    now_s = JAN_15_2025_S + 3 * HOUR_S + 12 * 60 + 30  # 04:12:30 in Berlin
    assessment = model.assess(0.1, EVERYTHING_FIRES, "Europe/Berlin", now_s)
    rendered = [(f.kind, f.name, f.weight_points, f.reason) for f in assessment.fired]
    assert rendered == [
        ("high_risk_network", "tor-exits", 3000, "client 203.0.113.200 is in tor-exits"),
        ("high_risk_network", "hosting", 1000, "client 203.0.113.200 is in hosting"),
        (
            "unusual_hour",
            "unusual_hour",
            1000,
            "04:12 local time (Europe/Berlin) is within 00:00-05:00",
        ),
        ("money_path", "money_path", 1000, "POST /api/transfers matches /api/transfers*"),
        ("suspicious_user_agent", "suspicious_user_agent", 3000, 'user agent contains "bot"'),
    ]
    assert assessment.score_points == 10_000
    utc = model.assess(0.1, EVERYTHING_FIRES, None, now_s).fired
    assert utc[2].reason == "03:12 UTC is within 00:00-05:00"
    crawler = dataclasses.replace(EVERYTHING_FIRES, user_agent="A CRAWLER")
    assert model.assess(0.0, crawler, None, NOON_S).fired[-1].reason == (
        'user agent contains "crawler"'
    )
    anonymous = dataclasses.replace(EVERYTHING_FIRES, user_agent=None)
    last = model.assess(0.0, anonymous, None, NOON_S).fired[-1]
    assert (last.kind, last.reason) == ("missing_user_agent", "no user agent")


# --- properties ------------------------------------------------------------------------------

CLIENTS = [
    None,
    "203.0.113.9",
    "203.0.113.200",
    "192.0.2.1",
    "198.51.100.7",
    "10.1.2.3",
    "::ffff:203.0.113.9",
    "2001:db8:dead::1",
    "2001:db8::1",
]
PATHS = ["/api/transfers", "/API/transfers/9?x=1", "/api/a/withdraw", "/api/%74ransfers", "/"]
AGENTS = [None, "", "Mozilla/5.0", "Googlebot", "python-requests", "AUTOMATED"]

weights = st.integers(0, POINTS_PER_UNIT).map(lambda points: points / POINTS_PER_UNIT)
requests = st.builds(
    Request,
    client=st.sampled_from(CLIENTS),
    method=st.sampled_from(["GET", "POST", "delete"]),
    path=st.sampled_from(PATHS),
    user_agent=st.sampled_from(AGENTS),
)
bases = st.floats(-2, 2) | st.sampled_from([0.0, 0.5, 0.8, 1.0, float("nan"), float("inf")])
zones = st.sampled_from([None, "Europe/Berlin", "America/New_York"])
instants = st.integers(1_704_067_200 - 86_400, 1_798_761_600)


@st.composite
def weighted_settings(draw: st.DrawFn) -> dict:
    """The test settings with every weight and both thresholds drawn at random."""
    risk = risk_settings({"start": "22:00", "end": "06:00", "weight": draw(weights)})
    for network_list in risk["high_risk_networks"]:
        network_list["weight"] = draw(weights)
    risk["money_paths"]["weight"] = draw(weights)
    risk["suspicious_user_agents"]["weight"] = draw(weights)
    risk["suspicious_user_agents"]["missing_weight"] = draw(weights)
    medium, high = sorted([draw(weights), draw(weights)])
    risk["thresholds"] = {"medium": medium, "high": high}
    return risk


def without_factor(risk: dict, kind: str, name: str) -> dict:
    """`risk` with the factor of `kind` (and `name`, for a network list) taken out."""
    risk = {**risk}
    if kind == "high_risk_network":
        risk["high_risk_networks"] = [n for n in risk["high_risk_networks"] if n["name"] != name]
    elif kind == "unusual_hour":
        risk["unusual_hours"] = None
    elif kind == "money_path":
        risk["money_paths"] = None
    elif kind == "suspicious_user_agent":
        risk["suspicious_user_agents"] = {**risk["suspicious_user_agents"], "patterns": []}
    else:
        risk["suspicious_user_agents"] = {**risk["suspicious_user_agents"], "missing_weight": None}
    return risk


@settings(max_examples=300, deadline=None)
@given(weighted_settings(), st.floats(-2, 2), requests, zones, instants)
def test_the_score_is_the_clamped_sum_and_never_drops_when_a_factor_fires(
    risk: dict, base: float, request: Request, zone: str | None, now_s: int
) -> None:
    model = RiskModel(risk)
    assessment = model.assess(base, request, zone, now_s)
    total = base_points(base) + sum(factor.weight_points for factor in assessment.fired)
    assert assessment.score_points == min(total, POINTS_PER_UNIT)
    for factor in assessment.fired:
        fewer = RiskModel(without_factor(risk, factor.kind, factor.name))
        lower = fewer.assess(base, request, zone, now_s)
        assert factor not in lower.fired
        assert lower.score_points <= assessment.score_points
        assert len(lower.fired) == len(assessment.fired) - 1


@settings(max_examples=300, deadline=None)
@given(weighted_settings(), bases, requests, zones, instants)
def test_the_score_stays_within_zero_and_one_and_matches_its_level(
    risk: dict, base: float, request: Request, zone: str | None, now_s: int
) -> None:
    assessment = RiskModel(risk).assess(base, request, zone, now_s)
    assert 0 <= assessment.score_points <= POINTS_PER_UNIT
    assert 0.0 <= assessment.score <= 1.0
    medium = round(risk["thresholds"]["medium"] * POINTS_PER_UNIT)
    high = round(risk["thresholds"]["high"] * POINTS_PER_UNIT)
    expected = (
        "HIGH"
        if assessment.score_points >= high
        else "MEDIUM"
        if assessment.score_points >= medium
        else "LOW"
    )
    assert assessment.level == expected
