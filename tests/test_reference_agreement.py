"""The core's whole decision agrees with its pure-Python reference (``cellgate.reference.decide``).

Hypothesis draws a world (tiers with placements and quotas, cells with tiers, regions, capacities,
certifications, encryption and breakers, compliance rules, risk settings, token settings with
step-up, profiles with flags, base risk and time zones) and a history of steps (requests with
tokens valid or broken in one way each, outcomes reported, decisions released, cells going up and
down, revocations, the clock moving). The core, built by ``parse_config``/``build_router`` from
the world's TOML and JSON Lines on ``Clock.manual``, and the reference, built from the same parsed
``Config``, take every step side by side; after each one they must agree on the decision
(ok, status, reason, customer, cell, risk, response fields, and the explanation of a 503) and on
every cell's in-flight count and health.

Tokens are signed by hand (hmac over the signing input) so that they can be broken in ways no JWT
library writes; the reference checks them with pyjwt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
from pathlib import Path
from typing import Any

import cellgate.config
import pytest
from cellgate import Clock, build_router, parse_config
from cellgate.reference.decide import ReferenceRouter
from cellgate.timezones import compile_zones
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

# Tuesday 2027-01-05 00:00:00 UTC; each world starts some hours and minutes later.
MIDNIGHT_UTC = 1_799_107_200
ISSUER, AUDIENCE = "https://issuer.test", "cellgate-test"
SECRETS = {"k1": ("HS256", b"k1-secret-0123456789abcdef012345"), "k2": ("HS384", b"k" * 48)}
WRONG_SECRET = b"not-the-secret-0123456789abcdef0"
HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
TIERS = ("corp", "hnw", "retail")
REGIONS = ("us-east", "eu-west", "ap-south")
CERTIFICATIONS = ("SOC2", "FedRAMP", "PCI")
LEVELS = ("standard", "enhanced", "maximum")
FLAGS = ("EU_RESIDENT", "HIGH_RISK", "PII_RESTRICTED", "VIP")
ZONES = (None, "UTC", "Asia/Tokyo", "America/New_York", "Europe/Berlin")
GHOST = "ghost"

METHODS = ("GET", "POST", "put", "DELETE")
PATHS = (
    "/api/accounts",
    "/api/transfers",
    "/api/transfers/7?confirm=1",
    "/API/Transfers",
    "/api/cards/withdraw",
    "/api/transfers%2F9",
)
CLIENTS = (
    "203.0.113.9:5000",
    "203.0.113.200",
    "192.0.2.10:443",
    "198.51.100.4:80",
    "[2001:db8:dead::1]:443",
    "2001:db8:beef::1",
    "[::ffff:203.0.113.9]:1",
    "unknown",
)
AGENTS = (None, "", "app/1.0", "sqlmap/1.7", "Mozilla/5.0 (compatible; Googlebot)", "Crawler")

TOKEN_KINDS = (
    "good",
    "good",
    "good",
    "step_up",
    "stale_step_up",
    "jti",
    "no_iat",
    "expired",
    "expired_within_leeway",
    "no_exp",
    "nbf_future",
    "nbf_within_leeway",
    "iat_future",
    "wrong_iss",
    "no_iss",
    "wrong_aud",
    "aud_list",
    "no_customer",
    "customer_number",
    "customer_empty",
    "customer_null",
    "bad_signature",
    "alg_mismatch",
    "unknown_kid",
    "no_kid",
    "second_key",
    "alg_none",
    "two_parts",
    "not_base64",
    "padded",
    "header_not_json",
    "header_array",
    "crit",
    "dup_alg",
    "dup_kid",
    "dup_typ",
    "dup_header_member",
    "dup_customer",
    "dup_exp",
    "dup_claim",
    "dup_nested_claim",
    "other_typ",
    "no_typ",
    "typ_not_string",
    "claims_not_object",
    "exp_string",
    "basic_scheme",
    "no_authorization",
    "lowercase_bearer",
    "padded_with_spaces",
)


@functools.cache
def _zones(names: tuple[str, ...]) -> dict[str, list[list[int]]]:
    return compile_zones(names)


@pytest.fixture(autouse=True, scope="module")
def cached_zone_tables():
    """Zone tables depend only on the names; compile each set once, not for every world."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            cellgate.config, "compile_zones", lambda names: _zones(tuple(sorted(set(names))))
        )
        yield


# --- worlds -------------------------------------------------------------------------------------


@st.composite
def breakers(draw: st.DrawFn) -> dict[str, int]:
    if draw(st.booleans()):
        return {
            "consecutive_failures": draw(st.integers(1, 3)),
            "wait_in_open_ms": draw(st.sampled_from([1000, 2500, 5000])),
            "successes_to_close": draw(st.integers(1, 2)),
        }
    return {
        "sliding_window_size": draw(st.integers(2, 5)),
        "minimum_number_of_calls": draw(st.integers(1, 5)),
        "failure_rate_threshold_pct": draw(st.sampled_from([34, 50, 100])),
        "slow_call_rate_threshold_pct": draw(st.sampled_from([50, 100])),
        "slow_call_duration_ms": draw(st.sampled_from([500, 2000])),
        "wait_in_open_ms": draw(st.sampled_from([1000, 3000])),
        "permitted_number_of_calls_in_half_open_state": draw(st.integers(1, 3)),
    }


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    tiers = {
        name: {
            "placement": draw(st.sampled_from(["least_loaded", "sticky"])),
            "rate_limit": draw(
                st.none()
                | st.none()
                | st.fixed_dictionaries(
                    {
                        "requests": st.integers(1, 4),
                        "period_s": st.sampled_from([1, 2, 10]),
                        "burst": st.integers(1, 3),
                    }
                )
            ),
        }
        for name in draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=3, unique=True))
    }
    regions = REGIONS[: draw(st.integers(1, 3))]
    cells = [
        {
            "id": f"cell-{i}",
            "tier": draw(st.sampled_from(sorted(tiers))),
            "region": draw(st.sampled_from(regions)),
            "capacity": draw(st.sampled_from([1, 2, 3, 5, 100])),
            "certifications": draw(st.lists(st.sampled_from(CERTIFICATIONS), unique=True)),
            "encryption": draw(st.sampled_from(LEVELS)),
            "breaker": draw(st.none() | st.none() | breakers()),
        }
        for i in range(draw(st.integers(1, 7)))
    ]
    used_regions = sorted({c["region"] for c in cells})
    certified = sorted({cert for c in cells for cert in c["certifications"]})
    compliance: dict[str, dict[str, str]] = {}
    if draw(st.booleans()):
        compliance["EU_RESIDENT"] = {"region": draw(st.sampled_from(used_regions))}
    if draw(st.booleans()):
        compliance["HIGH_RISK"] = {"encryption": draw(st.sampled_from(LEVELS[1:]))}
    if certified and draw(st.booleans()):
        compliance["PII_RESTRICTED"] = {"certification": draw(st.sampled_from(certified))}
        if draw(st.booleans()):
            compliance["PII_RESTRICTED"]["encryption"] = draw(st.sampled_from(LEVELS))
    weights = st.sampled_from([0.1, 0.2, 0.3, 0.5])
    medium = draw(st.sampled_from([0.3, 0.5]))
    risk = draw(
        st.none()
        | st.fixed_dictionaries(
            {
                "high_risk_networks": st.just(
                    [
                        {
                            "name": "bad-net",
                            "weight": draw(weights),
                            "cidrs": ["203.0.113.0/24", "2001:db8:dead::/48"],
                        },
                        {"name": "hosting", "weight": draw(weights), "cidrs": ["192.0.2.0/24"]},
                    ]
                ),
                "thresholds": st.just(
                    {"medium": medium, "high": draw(st.sampled_from([0.5, 0.8, 0.9]))}
                ),
            },
            optional={
                "unusual_hours": st.fixed_dictionaries(
                    {
                        "start": st.sampled_from(["22:00", "00:00", "13:30"]),
                        "end": st.sampled_from(["06:00", "05:00", "14:00"]),
                        "weight": weights,
                    }
                ),
                "money_paths": st.fixed_dictionaries(
                    {
                        "weight": weights,
                        "patterns": st.just(["/api/transfers*", "/api/*/withdraw"]),
                    },
                    optional={"methods": st.just(["POST", "PUT"])},
                ),
                "suspicious_user_agents": st.fixed_dictionaries(
                    {"weight": weights, "patterns": st.just(["bot", "sqlmap", "crawler"])},
                    optional={"missing_weight": weights},
                ),
            },
        )
    )
    jwt = {
        "issuer": draw(st.none() | st.just(ISSUER) | st.just(ISSUER)),
        "audience": draw(st.none() | st.just(AUDIENCE) | st.just(AUDIENCE)),
        "leeway_s": draw(st.sampled_from([0, 5, 30])),
        "require_exp": draw(st.booleans()),
        "customer_claim": draw(st.sampled_from(["sub", "sub", "cid"])),
        "typ": draw(st.none() | st.none() | st.sampled_from(["at+jwt", "application/JWT"])),
        "two_keys": draw(st.booleans()),
        "step_up": draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "amr": st.just("mfa"),
                    "acr": st.just(["gold"]),
                    "max_age_s": st.sampled_from([60, 600]),
                },
            )
        ),
    }
    profiles = [
        {
            "customer_id": f"c{i}",
            "tier": draw(st.sampled_from(sorted(tiers))),
            "region": draw(st.sampled_from(used_regions)),
            "risk": draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 1.0])),
            "flags": draw(st.lists(st.sampled_from(FLAGS), unique=True, max_size=2)),
            "timezone": draw(st.sampled_from(ZONES)),
        }
        for i in range(draw(st.integers(1, 4)))
    ]
    start = MIDNIGHT_UTC + draw(st.integers(0, 23)) * 3600 + draw(st.sampled_from([0, 1799.5]))
    return {
        "tiers": tiers,
        "cells": cells,
        "compliance": compliance,
        "risk": risk,
        "jwt": jwt,
        "breaker": draw(breakers()),
        "profiles": [{k: v for k, v in p.items() if v is not None} for p in profiles],
        "start_s": start,
    }


@st.composite
def busy_worlds(draw: st.DrawFn) -> dict[str, Any]:
    """Worlds for placement and breakers: one region, small capacities, quick breakers with few
    trial calls (so half-open cells refuse permits), no risk, quotas or compliance."""
    tiers = {
        name: {"placement": draw(st.sampled_from(["least_loaded", "sticky"])), "rate_limit": None}
        for name in draw(st.lists(st.sampled_from(TIERS[:2]), min_size=1, max_size=2, unique=True))
    }
    quick_breakers = st.fixed_dictionaries(
        {
            "consecutive_failures": st.integers(1, 2),
            "wait_in_open_ms": st.just(1000),
            "successes_to_close": st.integers(1, 3),
        }
    )
    cells = [
        {
            "id": f"cell-{i}",
            "tier": draw(st.sampled_from(sorted(tiers))),
            "region": "us-east",
            "capacity": draw(st.sampled_from([1, 2, 3])),
            "certifications": [],
            "encryption": "standard",
            "breaker": draw(st.none() | quick_breakers),
        }
        for i in range(draw(st.integers(2, 6)))
    ]
    profiles = [
        {"customer_id": f"c{i}", "tier": draw(st.sampled_from(sorted(tiers))), "region": "us-east"}
        for i in range(draw(st.integers(1, 3)))
    ]
    return {
        "tiers": tiers,
        "cells": cells,
        "compliance": {},
        "risk": None,
        "jwt": {
            "issuer": None,
            "audience": None,
            "leeway_s": 0,
            "require_exp": True,
            "customer_claim": "sub",
            "typ": None,
            "two_keys": False,
            "step_up": {},
        },
        "breaker": draw(quick_breakers),
        "profiles": profiles,
        "start_s": MIDNIGHT_UTC,
    }


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def toml_table(name: str, table: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items()) + "\n"


def config_text(world: dict[str, Any]) -> str:
    """The world as the TOML an operator writes."""
    jwt = world["jwt"]
    keys = ["k1", "k2"] if jwt["two_keys"] else ["k1"]
    jwt_table = {k: v for k, v in jwt.items() if k not in ("two_keys", "step_up") and v is not None}
    text = toml_table("jwt", jwt_table) + toml_table("jwt.step_up", jwt["step_up"])
    for kid in keys:
        alg, secret = SECRETS[kid]
        text += toml_table("[jwt.keys]", {"kid": kid, "alg": alg, "secret": secret.decode()})
    for name, tier in world["tiers"].items():
        text += toml_table(f"tiers.{name}", {"placement": tier["placement"]})
        if tier["rate_limit"]:
            text += toml_table(f"tiers.{name}.rate_limit", tier["rate_limit"])
    for i, cell in enumerate(world["cells"]):
        fields = {k: v for k, v in cell.items() if k != "breaker"}
        text += toml_table("[cells]", {**fields, "endpoint": f"http://127.0.0.1:{9000 + i}"})
        if cell["breaker"]:
            text += toml_table("cells.breaker", cell["breaker"])  # the last cell's
    text += toml_table("compliance", world["compliance"])
    text += toml_table("breaker", world["breaker"])
    if world["risk"] is not None:
        risk = world["risk"]
        text += toml_table("risk.thresholds", risk["thresholds"])
        for network_list in risk["high_risk_networks"]:
            text += toml_table("[risk.high_risk_networks]", network_list)
        for name in ("unusual_hours", "money_paths", "suspicious_user_agents"):
            if name in risk:
                text += toml_table(f"risk.{name}", risk[name])
    return text + toml_table("profiles", {"source": "customers.jsonl"})


def build(world: dict[str, Any], directory: Path):
    """The core router, its clock and the reference, from one world."""
    (directory / "customers.jsonl").write_text("\n".join(map(json.dumps, world["profiles"])))
    parsed = parse_config(config_text(world), directory)
    clock = Clock.manual(world["start_s"])
    core = build_router(parsed, clock)
    return core, clock, ReferenceRouter(parsed, world["profiles"], world["start_s"])


# --- tokens -------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: Any, claims: Any, secret: bytes, hash_alg: str = "HS256") -> str:
    """A compact JWS over exactly these header and claims (any JSON, or raw bytes)."""
    parts = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in (header, claims)]
    signing_input = f"{b64(parts[0])}.{b64(parts[1])}"
    tag = hmac.new(secret, signing_input.encode(), HASHES[hash_alg]).digest()
    return f"{signing_input}.{b64(tag)}"


def typ_spelling(typ: str, n: int) -> str:
    """One of the spellings of the media type ``typ`` names (RFC 7515 section 4.1.9)."""
    short = typ.split("/", 1)[1] if typ.lower().startswith("application/") else typ
    return [short, f"application/{short}", typ.upper()][n % 3]


def authorization(kind: str, customer: str, jti: int, world: dict[str, Any], now_s: int):
    """An Authorization value for ``customer``, valid or broken in the one way ``kind`` names."""
    claim = world["jwt"]["customer_claim"]
    claims: dict[str, Any] = {
        claim: customer,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now_s + 120,
        "iat": now_s - 5,
    }
    required_typ = world["jwt"]["typ"]
    header: Any = {"alg": "HS256", "kid": "k1", "typ": typ_spelling(required_typ or "JWT", jti)}
    secret, hash_alg = SECRETS["k1"][1], "HS256"
    edits: dict[str, dict[str, Any]] = {
        "step_up": {"amr": ["pwd", "mfa"], "acr": "gold", "auth_time": now_s - 30},
        "stale_step_up": {"amr": ["mfa"], "acr": "silver", "auth_time": now_s - 3600},
        "jti": {"jti": f"j{jti}"},
        "expired": {"exp": now_s - 100},
        "expired_within_leeway": {"exp": now_s - 3},
        "nbf_future": {"nbf": now_s + 100},
        "nbf_within_leeway": {"nbf": now_s + 3},
        "iat_future": {"iat": now_s + 100},
        "wrong_iss": {"iss": "https://elsewhere.test"},
        "wrong_aud": {"aud": "someone-else"},
        "aud_list": {"aud": ["x", AUDIENCE]},
        "customer_number": {claim: 42},
        "customer_empty": {claim: ""},
        "customer_null": {claim: None},
        "exp_string": {"exp": "soon"},
    }
    claims.update(edits.get(kind, {}))
    for dropped, name in (("no_iat", "iat"), ("no_exp", "exp"), ("no_iss", "iss")):
        if kind == dropped:
            del claims[name]
    if kind == "no_customer":
        del claims[claim]
    if kind == "claims_not_object":
        claims = [claims]
    if kind == "bad_signature":
        secret = WRONG_SECRET
    if kind == "alg_mismatch":
        header, hash_alg = {"alg": "HS512", "kid": "k1"}, "HS512"
    if kind == "unknown_kid":
        header = {"alg": "HS256", "kid": "k9"}
    if kind == "no_kid":
        header = {"alg": "HS256"}
    if kind == "second_key":
        header, (_, secret), hash_alg = {"alg": "HS384", "kid": "k2"}, SECRETS["k2"], "HS384"
    if kind == "alg_none":
        header = {"alg": "nOnE", "kid": "k1"}
    if kind == "header_array":
        header = ["HS256", "k1"]
    if kind == "crit":
        header = {**header, "crit": ["exp"]}
    if kind == "dup_alg":
        header = b'{"alg":"HS256","alg":"HS256","kid":"k1"}'
    if kind == "header_not_json":
        header = b"{alg: HS256}"
    if kind == "other_typ":
        header = {**header, "typ": "secevent+jwt"}
    if kind == "no_typ":
        del header["typ"]
    if kind == "typ_not_string":
        header = {**header, "typ": [header["typ"]]}
    repeated = {
        "dup_kid": ("header", "kid"),
        "dup_typ": ("header", "typ"),
        "dup_header_member": ("header", "x-extra"),
        "dup_customer": ("claims", claim),
        "dup_exp": ("claims", "exp"),
        "dup_claim": ("claims", "x-extra"),
    }
    if kind in repeated:
        part, name = repeated[kind]
        obj = header if part == "header" else claims
        value = obj.get(name, 1)
        doubled = json.dumps({**obj, name: value})[:-1] + f", {json.dumps(name)}: "
        doubled += json.dumps(value) + "}"
        if part == "header":
            header = doubled.encode()
        else:
            claims = doubled.encode()
    if kind == "dup_nested_claim":
        claims = json.dumps({**claims, "ctx": {"a": 1}})[:-2].encode() + b', "a": 2}}'
    token = sign(header, claims, secret, hash_alg)
    if kind == "two_parts":
        token = token.rsplit(".", 1)[0]
    if kind == "not_base64":
        token = "!" + token
    if kind == "padded":
        token += "="
    scheme = {"basic_scheme": "Basic ", "lowercase_bearer": "bearer "}.get(kind, "Bearer ")
    if kind == "padded_with_spaces":
        token = f"  {token}\u3000"
    return None if kind == "no_authorization" else scheme + token


# --- steps --------------------------------------------------------------------------------------

requests = st.tuples(
    st.just("decide"),
    st.integers(0, 7),  # the customer: a profile (mod their number), 7 the ghost
    st.one_of(st.sampled_from(["good", "step_up", "jti"]), st.sampled_from(TOKEN_KINDS)),
    st.integers(0, 2),  # the jti number
    st.sampled_from(METHODS),
    st.sampled_from(PATHS),
    st.sampled_from(CLIENTS),
    st.sampled_from(AGENTS),
)
#: Each kind of step, repeated to weigh it (st.one_of would count a repeated branch once).
STEPS = {
    "decide": requests,
    "again": st.tuples(st.just("again"), st.integers(0, 50)),
    "report": st.tuples(st.just("report"), st.integers(0, 50), st.booleans()),
    "fail": st.tuples(st.just("report"), st.integers(0, 50), st.just(False)),
    "release": st.tuples(st.just("release"), st.integers(0, 50)),
    "health": st.tuples(st.just("health"), st.integers(0, 6), st.booleans()),
    "advance": st.tuples(
        st.just("advance"), st.sampled_from([0.0005, 0.4, 1, 2.5, 6, 31, 900, 5 * 3600])
    ),
    "revoke_token": st.tuples(st.just("revoke_token"), st.integers(0, 2), st.sampled_from([0, 60])),
    "revoke_customer": st.tuples(
        st.just("revoke_customer"), st.integers(0, 3), st.sampled_from([-60, 0, 60])
    ),
    "lift": st.tuples(st.just("lift"), st.integers(0, 3)),
    "busy_decide": st.tuples(
        st.just("decide"),
        st.integers(0, 6),
        st.just("good"),
        st.just(0),
        st.just("GET"),
        st.just("/api/accounts"),
        st.just("192.0.2.10:443"),
        st.just("app/1.0"),
    ),
    "busy_advance": st.tuples(st.just("advance"), st.sampled_from([0.5, 1, 1])),
}


def weighted_steps(weights: dict[str, int]) -> st.SearchStrategy[tuple[Any, ...]]:
    """Steps of the kinds in ``weights``, each kind drawn in proportion to its weight."""
    return st.sampled_from([name for name, n in weights.items() for _ in range(n)]).flatmap(
        STEPS.__getitem__
    )


#: Everything, requests most.
steps = weighted_steps(
    {
        "decide": 10,
        "again": 2,
        "report": 3,
        "fail": 2,
        "release": 2,
        "health": 2,
        "advance": 3,
        "revoke_token": 1,
        "revoke_customer": 1,
        "lift": 1,
    }
)
#: Placement and breakers: good tokens, failures, time passing past the breakers' waits.
busy_steps = weighted_steps(
    {"busy_decide": 8, "report": 2, "fail": 4, "release": 1, "health": 1, "busy_advance": 2}
)


def assert_same_decision(core_decision, ref_decision) -> None:
    core_view = (
        core_decision.ok,
        core_decision.status,
        core_decision.reason,
        core_decision.customer_id,
        core_decision.cell_id,
        core_decision.fields,
    )
    ref_view = (
        ref_decision.ok,
        ref_decision.status,
        ref_decision.reason,
        ref_decision.customer_id,
        ref_decision.cell_id,
        ref_decision.fields,
    )
    assert core_view == ref_view, core_decision.detail
    if core_decision.risk is None or ref_decision.risk is None:
        assert core_decision.risk == ref_decision.risk
    else:
        assert core_decision.risk[1] == ref_decision.risk[1]
        assert core_decision.risk[0] == pytest.approx(ref_decision.risk[0], abs=1e-6)
    if core_decision.reason == "no_eligible_cell":
        assert core_decision.detail == ref_decision.detail


def run_history(world, history, directory: Path) -> None:
    """Drives the core and the reference through ``history``, comparing after every step."""
    core, clock, ref = build(world, directory)
    customers = [p["customer_id"] for p in world["profiles"]]
    cell_ids = [c["id"] for c in world["cells"]]
    held: list[tuple[Any, Any]] = []
    sent: list[tuple[tuple[Any, ...], str | None]] = []
    for step in history:
        now_s = int(clock.now())
        note(f"t={clock.now()} {step}")
        kind, *args = step
        if kind in ("decide", "again"):
            if kind == "decide":
                who, token_kind, jti, method, path, client, agent = args
                customer = GHOST if who == 7 else customers[who % len(customers)]
                auth = authorization(token_kind, customer, jti, world, now_s)
                sent.append(((method, path, auth, client, agent), token_kind))
            elif sent:
                (method, path, auth, client, agent), token_kind = sent[args[0] % len(sent)]
            else:
                continue
            core_decision = core.decide(method, path, auth, client, agent)
            ref_decision = ref.decide(method, path, auth, client, agent)
            assert_same_decision(core_decision, ref_decision)
            event(f"decided: {core_decision.reason or 'routed'}")
            if core_decision.ok:
                held.append((core_decision, ref_decision))
        elif kind in ("report", "release") and held:
            core_decision, ref_decision = held.pop(args[0] % len(held))
            if kind == "report":
                assert core.report(core_decision, args[1]) == ref.report(ref_decision, args[1])
            else:
                assert core_decision.release() == ref.release(ref_decision)
        elif kind == "health":
            cell_id = cell_ids[args[0] % len(cell_ids)]
            core.set_cell_health(cell_id, args[1])
            ref.set_cell_health(cell_id, args[1])
        elif kind == "advance":
            clock.advance(args[0])
            ref.clock.advance(args[0])
        elif kind == "revoke_token":
            core.revoke_token(f"j{args[0]}", now_s + args[1])
            ref.revoke_token(f"j{args[0]}", now_s + args[1])
        elif kind == "revoke_customer":
            customer = customers[args[0] % len(customers)]
            core.revoke_customer(customer, now_s + args[1])
            ref.revoke_customer(customer, now_s + args[1])
        elif kind == "lift":
            customer = customers[args[0] % len(customers)]
            assert core.lift_customer_revocation(customer) == ref.lift_customer_revocation(customer)
        assert clock.now() == ref.clock.now()
        core_cells = {c["id"]: (c["in_flight"], c["healthy"]) for c in core.cells()}
        assert core_cells == ref.in_flight()
    for core_decision, ref_decision in held:
        assert core_decision.release() == ref.release(ref_decision)


_directories = itertools.count()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(world=worlds(), history=st.lists(steps, min_size=10, max_size=80))
def test_the_core_decides_as_the_reference_does(world, history, tmp_path_factory):
    note(config_text(world))
    note(json.dumps(world["profiles"]))
    run_history(world, history, tmp_path_factory.mktemp(f"world{next(_directories)}"))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(world=busy_worlds(), history=st.lists(busy_steps, min_size=10, max_size=60))
def test_placement_and_breakers_agree_under_load(world, history, tmp_path_factory):
    note(config_text(world))
    run_history(world, history, tmp_path_factory.mktemp(f"busy{next(_directories)}"))


# --- tokens alone -------------------------------------------------------------------------------

MISSING = object()
TOKEN_NOW = MIDNIGHT_UTC + 12 * 3600
TOKEN_WORLD: dict[str, Any] = {
    "tiers": {"retail": {"placement": "least_loaded", "rate_limit": None}},
    "cells": [
        {
            "id": "cell-0",
            "tier": "retail",
            "region": "us-east",
            "capacity": 100,
            "certifications": [],
            "encryption": "standard",
            "breaker": None,
        }
    ],
    "compliance": {},
    "risk": None,
    "jwt": {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "leeway_s": 30,
        "require_exp": True,
        "customer_claim": "sub",
        "typ": None,
        "two_keys": True,
        "step_up": {"amr": "mfa"},
    },
    "breaker": {},
    "profiles": [{"customer_id": "c-1", "tier": "retail", "region": "us-east"}],
    "start_s": TOKEN_NOW,
}


def around(now: int) -> st.SearchStrategy[Any]:
    """A time claim near ``now`` (mostly whole seconds), or one of a wrong type."""
    whole_seconds = st.integers(-100, 100).map(lambda d: now + d)
    others = st.sampled_from([now + 0.5, now - 30.5, "soon", None, True, [now]])
    return st.sampled_from([whole_seconds] * 4 + [others]).flatmap(lambda chosen: chosen)


def usually(valid: Any, *others: Any) -> st.SearchStrategy[Any]:
    """``valid`` three times in four, else one of ``others`` (MISSING: the member is left out)."""
    return st.sampled_from([st.just(valid)] * 3 + [st.sampled_from(others)]).flatmap(
        lambda chosen: chosen
    )


#: Claim strategies; MISSING leaves the claim out.
CLAIMS = {
    "exp": st.sampled_from(
        [around(TOKEN_NOW - 60), st.just(MISSING)] + [around(TOKEN_NOW + 60)] * 4
    ).flatmap(lambda chosen: chosen),
    "nbf": st.one_of(st.just(MISSING), st.just(MISSING), around(TOKEN_NOW)),
    "iat": st.one_of(st.just(MISSING), around(TOKEN_NOW - 30)),
    "iss": usually(ISSUER, "other", 5, None, MISSING),
    "aud": usually(AUDIENCE, [AUDIENCE, "x"], ["x"], [], {}, 5, None, MISSING),
    "sub": usually("c-1", "", "nobody", 42, None, ["c-1"], MISSING),
    "amr": usually(MISSING, ["mfa"], ["pwd"], "mfa", [1], None),
    "acr": usually(MISSING, "gold", 1),
    "jti": usually(MISSING, "t-1", 7),
    "auth_time": st.one_of(st.just(MISSING), around(TOKEN_NOW)),
}
HEADER = {
    "alg": usually("HS256", "HS384", "HS512", "none", "NONE", "RS256", 5, MISSING),
    "kid": usually("k1", "k2", "k9", None, 5, MISSING),
    "crit": st.sampled_from([MISSING] * 5 + [["exp"]]),
    "typ": st.sampled_from(
        ["JWT", MISSING, "at+jwt", "at+jwt", "application/AT+JWT", "text/at+jwt", "jwt", 5, None]
    ),
}


def repeat_member(obj: dict[str, Any], name: str, value: Any) -> bytes:
    """``obj`` as JSON with one more member ``name`` at its end."""
    return (json.dumps(obj)[:-1] + f", {json.dumps(name)}: {json.dumps(value)}}}").encode()


def with_repeat(obj: dict[str, Any], how: str | None) -> Any:
    """``obj``, or its JSON text with its first member given again (``first``; ``other`` with
    another value), or with an object claim that repeats a member inside it (``nested``)."""
    if how in ("first", "other") and obj:
        name = next(iter(obj))
        return repeat_member(obj, name, obj[name] if how == "first" else "again")
    if how == "nested":
        return json.dumps({**obj, "ctx": {"a": 1}})[:-2].encode() + b', "a": 2}}'
    return obj


def json_objects(members: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict]:
    """Objects of the drawn members, leaving out those drawn MISSING."""
    return st.fixed_dictionaries(members).map(
        lambda drawn: {name: value for name, value in drawn.items() if value is not MISSING}
    )


@pytest.fixture(scope="module", params=[None, "at+jwt"], ids=["any-typ", "typ-at+jwt"])
def token_routers(request, tmp_path_factory):
    world = {**TOKEN_WORLD, "jwt": {**TOKEN_WORLD["jwt"], "typ": request.param}}
    return build(world, tmp_path_factory.mktemp("tokens"))


@settings(max_examples=400, deadline=None)
@given(
    header=json_objects(HEADER),
    claims=json_objects(CLAIMS),
    signer=usually("k1", "k2", "wrong"),
    damage=usually(None, "truncate", "pad", "extra_part", "swap"),
    header_repeat=usually(None, "first", "other", "nested"),
    claims_repeat=usually(None, "first", "other", "nested"),
)
def test_every_token_gets_the_references_verdict(
    token_routers, header, claims, signer, damage, header_repeat, claims_repeat
):
    core, _, ref = token_routers
    alg, secret = SECRETS.get(signer, ("HS256", WRONG_SECRET))
    header, claims = with_repeat(header, header_repeat), with_repeat(claims, claims_repeat)
    token = sign(header, claims, secret, alg)
    head, payload, signature = token.split(".")
    token = {
        "truncate": token[:-3],
        "pad": f"{head}=.{payload}.{signature}",
        "extra_part": f"{token}.{signature}",
        "swap": f"{payload}.{head}.{signature}",
    }.get(damage, token)
    core_decision = core.decide("GET", "/", f"Bearer {token}", "192.0.2.1:1")
    ref_decision = ref.decide("GET", "/", f"Bearer {token}", "192.0.2.1:1")
    event(f"decided: {core_decision.reason or 'routed'}")
    assert_same_decision(core_decision, ref_decision)
    assert core_decision.release() == ref.release(ref_decision)


# --- a registered claim naming the customer -----------------------------------------------------


@pytest.mark.parametrize(
    "claim",
    [
        "iss",
        "jti",
        "acr",
    ],
)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customer=st.sampled_from(["c0", "c1", "nobody"]), amr=st.booleans())
def test_a_registered_claim_may_name_the_customer(tmp_path_factory, claim, customer, amr):
    world = {
        **TOKEN_WORLD,
        "jwt": {**TOKEN_WORLD["jwt"], "issuer": None, "customer_claim": claim},
        "profiles": [
            {"customer_id": f"c{i}", "tier": "retail", "region": "us-east"} for i in range(2)
        ],
    }
    core, _, ref = build(world, tmp_path_factory.mktemp(f"claim-{claim}"))
    claims = {claim: customer, "aud": AUDIENCE, "exp": TOKEN_NOW + 60}
    claims.update({"amr": ["mfa"]} if amr else {})
    auth = f"Bearer {sign({'alg': 'HS256', 'kid': 'k1'}, claims, SECRETS['k1'][1])}"
    assert_same_decision(
        core.decide("GET", "/", auth, "192.0.2.1:1"), ref.decide("GET", "/", auth, "192.0.2.1:1")
    )
