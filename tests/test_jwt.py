"""Bearer-token verification in the core: HS256/384/512, claims, reason codes and the token cache.

pyjwt makes the tokens (``jwt.encode``, or pyjwt's own HMAC algorithms signing a hand-built
signing input where a token must be malformed in a way pyjwt would never produce), and serves as
the oracle of a differential property test. The router runs on a manual clock.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cellgate import Clock, Router, build_router, parse_config
from cellgate.config import compile_settings
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import event, given, settings
from hypothesis import strategies as st

NOW = 1_700_000_000
LEEWAY = 30
ISSUER = "https://issuer.test"
AUDIENCE = "cellgate-test"

#: kid -> (alg, secret); each secret exactly the RFC 7518 section 3.2 minimum for its algorithm.
KEYS: dict[str, tuple[str, bytes]] = {
    "k256": ("HS256", b"hs256-test-secret-0123456789abcd"),
    "k384": ("HS384", b"hs384-test-secret-0123456789abcdef0123456789abcd"),
    "k512": ("HS512", b"hs512-test-secret-0123456789abcdef0123456789abcdef0123456789abcd"),
}
KID_BY_ALG = {alg: kid for kid, (alg, _) in KEYS.items()}
#: Secrets of the same lengths that the router does not know.
WRONG_SECRETS = {alg: bytes(b ^ 0x55 for b in secret) for alg, secret in KEYS.values()}

AUTH_REASONS = {
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
}

CUSTOMERS = b"""\
{"customer_id": "c-1", "tier": "retail", "region": "us-east"}
{"customer_id": "c-2", "tier": "retail", "region": "us-east"}
{"customer_id": "joe", "tier": "retail", "region": "us-east"}
"""


def config_text(keys: dict[str, tuple[str, bytes]] = KEYS, **jwt_extra: Any) -> str:
    key_tables = "".join(
        f'[[jwt.keys]]\nkid = "{kid}"\nalg = "{alg}"\nsecret = "{secret.decode()}"\n\n'
        for kid, (alg, secret) in keys.items()
    )
    jwt_settings = {"customer_claim": "sub", **jwt_extra}
    extra = "".join(f"{name} = {json.dumps(value)}\n" for name, value in jwt_settings.items())
    return f"""
[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_s = {LEEWAY}
{extra}
{key_tables}
[tiers.retail]
placement = "least_loaded"

[[cells]]
id = "retail-1"
tier = "retail"
region = "us-east"
endpoint = "http://127.0.0.1:9"
capacity = 100000

[profiles]
source = "customers.jsonl"
"""


RouterFactory = Callable[..., tuple[Router, Clock]]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("jwt")
    (directory / "customers.jsonl").write_bytes(CUSTOMERS)
    return directory


@pytest.fixture(scope="module")
def make_router(config_dir: Path) -> RouterFactory:
    """Builds a router at ``NOW`` on a manual clock; keys and ``[jwt]`` settings overridable."""

    def make(keys: dict[str, tuple[str, bytes]] = KEYS, **jwt_extra: Any) -> tuple[Router, Clock]:
        clock = Clock.manual(NOW)
        config = parse_config(config_text(keys, **jwt_extra), config_dir)
        return build_router(config, clock), clock

    return make


@pytest.fixture(scope="module")
def make_core_router(config_dir: Path) -> RouterFactory:
    """Builds a router from the core settings of the test configuration with ``jwt`` replaced
    in part: for what the TOML cannot say (no issuer or audience check, binary secrets)."""

    def make(start_s: float = NOW, **jwt_updates: Any) -> tuple[Router, Clock]:
        core_settings = orjson.loads(compile_settings(parse_config(config_text(), config_dir)))
        core_settings["jwt"].update(jwt_updates)
        clock = Clock.manual(start_s)
        return Router(orjson.dumps(core_settings), CUSTOMERS, clock), clock

    return make


@pytest.fixture
def router(make_router: RouterFactory) -> Router:
    return make_router()[0]


@pytest.fixture(scope="module")
def shared(make_router: RouterFactory) -> tuple[Router, Clock]:
    """One router for all examples of a property test (hypothesis reruns the test body)."""
    return make_router()


# --- token making ---------------------------------------------------------------------------

MISSING = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims at ``NOW``; a change to ``MISSING`` drops that claim."""
    base: dict[str, Any] = {
        "sub": "c-1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": NOW,
        "exp": NOW + 600,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not MISSING}


def token(
    payload: dict[str, Any] | None = None,
    alg: str = "HS256",
    kid: object = MISSING,
    secret: bytes | None = None,
) -> str:
    """A pyjwt token; by default signed with the configured key of ``alg``, naming its kid."""
    if kid is MISSING:
        kid = KID_BY_ALG[alg]
    headers = None if kid is None else {"kid": kid}
    key = KEYS[KID_BY_ALG[alg]][1] if secret is None else secret
    return jwt.encode(claims() if payload is None else payload, key, algorithm=alg, headers=headers)


def signed(header: bytes, payload: bytes, alg: str = "HS256", secret: bytes | None = None) -> str:
    """Raw header and payload bytes signed by pyjwt's HMAC with the configured key of ``alg``."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    return sign_input(signing_input, alg, secret)


def sign_input(signing_input: str, alg: str = "HS256", secret: bytes | None = None) -> str:
    algorithm = jwt.get_algorithm_by_name(alg)
    key = algorithm.prepare_key(KEYS[KID_BY_ALG[alg]][1] if secret is None else secret)
    return f"{signing_input}.{b64(algorithm.sign(signing_input.encode(), key))}"


def segments(tok: str) -> list[str]:
    return tok.split(".")


GOOD_HEADER = b'{"alg":"HS256","kid":"k256"}'
GOOD_PAYLOAD = json.dumps(claims()).encode()
NONE_HEADER = b'{"alg":"none","kid":"k256"}'


def tampered_payload() -> str:
    header, _, signature = segments(token())
    forged = b64(json.dumps(claims(sub="c-2")).encode())
    return f"{header}.{forged}.{signature}"


def rs256_token() -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k256"})


def with_segment(tok: str, index: int, edit: Callable[[str], str]) -> str:
    parts = segments(tok)
    parts[index] = edit(parts[index])
    return ".".join(parts)


# --- the matrix -----------------------------------------------------------------------------


def bearer(make: Callable[[], str]) -> Callable[[], str]:
    return lambda: f"Bearer {make()}"


ACCEPTED = [
    pytest.param(bearer(lambda: token(alg="HS256")), id="valid-HS256"),
    pytest.param(bearer(lambda: token(alg="HS384")), id="valid-HS384"),
    pytest.param(bearer(lambda: token(alg="HS512")), id="valid-HS512"),
    pytest.param(
        bearer(lambda: token(claims(exp=NOW - LEEWAY + 1))), id="expired-but-within-leeway"
    ),
    pytest.param(bearer(lambda: token(claims(nbf=NOW + LEEWAY))), id="nbf-ahead-within-leeway"),
    pytest.param(bearer(lambda: token(claims(nbf=NOW - 10))), id="nbf-in-the-past"),
    pytest.param(bearer(lambda: token(claims(aud=["other", AUDIENCE]))), id="aud-list-with-ours"),
    pytest.param(bearer(lambda: token(claims(aud=[AUDIENCE]))), id="aud-list-of-one"),
    # iat may lie up to the leeway ahead (clock skew), as pyjwt allows by default.
    pytest.param(bearer(lambda: token(claims(iat=NOW + LEEWAY))), id="iat-ahead-within-leeway"),
    pytest.param(bearer(lambda: token(claims(iat=MISSING))), id="no-iat"),
    pytest.param(lambda: f"bearer {token()}", id="scheme-is-case-insensitive"),
    pytest.param(lambda: f"BEARER {token()}", id="scheme-upper-case"),
    pytest.param(lambda: f"Bearer  {token()} ", id="spaces-around-the-token"),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, GOOD_PAYLOAD + b" \n")), id="payload-trailing-space"
    ),
]

REFUSED = [
    # a token issued in the future (beyond the leeway) is not valid yet, as pyjwt also says
    pytest.param(
        bearer(lambda: token(claims(iat=NOW + LEEWAY + 1))), "not_yet_valid", id="iat-in-the-future"
    ),
    # signature
    pytest.param(bearer(tampered_payload), "bad_signature", id="tampered-payload"),
    pytest.param(
        bearer(lambda: token(secret=WRONG_SECRETS["HS256"])), "bad_signature", id="wrong-key-HS256"
    ),
    pytest.param(
        bearer(lambda: token(alg="HS384", secret=WRONG_SECRETS["HS384"])),
        "bad_signature",
        id="wrong-key-HS384",
    ),
    pytest.param(
        bearer(lambda: token(alg="HS512", secret=WRONG_SECRETS["HS512"])),
        "bad_signature",
        id="wrong-key-HS512",
    ),
    pytest.param(
        bearer(lambda: with_segment(token(), 2, lambda s: segments(token(claims(sub="c-2")))[2])),
        "bad_signature",
        id="signature-of-another-token",
    ),
    pytest.param(
        bearer(lambda: with_segment(token(), 2, lambda s: "")), "bad_signature", id="no-signature"
    ),
    # time
    pytest.param(
        bearer(lambda: token(claims(exp=NOW - LEEWAY))), "expired", id="expired-at-leeway-edge"
    ),
    pytest.param(bearer(lambda: token(claims(exp=NOW - 3600))), "expired", id="expired-long-ago"),
    pytest.param(
        bearer(lambda: token(claims(nbf=NOW + LEEWAY + 1))),
        "not_yet_valid",
        id="nbf-beyond-leeway",
    ),
    # issuer and audience
    pytest.param(
        bearer(lambda: token(claims(iss="https://evil.test"))), "wrong_issuer", id="wrong-iss"
    ),
    pytest.param(bearer(lambda: token(claims(iss=MISSING))), "wrong_issuer", id="no-iss"),
    pytest.param(
        bearer(lambda: token(claims(aud="other"))), "wrong_audience", id="wrong-aud-string"
    ),
    pytest.param(
        bearer(lambda: token(claims(aud=["other", "more"]))),
        "wrong_audience",
        id="wrong-aud-list",
    ),
    pytest.param(bearer(lambda: token(claims(aud=[]))), "wrong_audience", id="empty-aud-list"),
    pytest.param(bearer(lambda: token(claims(aud=MISSING))), "wrong_audience", id="no-aud"),
    # algorithm
    pytest.param(
        bearer(lambda: f"eyJhbGciOiJub25lIn0.{b64(GOOD_PAYLOAD)}."),
        "alg_not_allowed",
        id="alg-none",
    ),
    pytest.param(
        bearer(lambda: f"{b64(NONE_HEADER)}.{b64(GOOD_PAYLOAD)}."),
        "alg_not_allowed",
        id="alg-none-with-kid",
    ),
    pytest.param(
        bearer(lambda: signed(b'{"alg":"NoNe","kid":"k256"}', GOOD_PAYLOAD)),
        "alg_not_allowed",
        id="alg-none-mixed-case-signed",
    ),
    pytest.param(bearer(rs256_token), "alg_not_allowed", id="alg-RS256"),
    pytest.param(
        bearer(lambda: token(alg="HS384", kid="k256")),
        "alg_not_allowed",
        id="HS384-token-naming-an-HS256-key",
    ),
    pytest.param(
        bearer(lambda: signed(b'{"alg":"hs256","kid":"k256"}', GOOD_PAYLOAD)),
        "alg_not_allowed",
        id="alg-lower-case",
    ),
    # key lookup
    pytest.param(bearer(lambda: token(kid="nope")), "unknown_kid", id="unknown-kid"),
    pytest.param(bearer(lambda: token(kid=None)), "unknown_kid", id="no-kid-with-several-keys"),
    # customer
    pytest.param(bearer(lambda: token(claims(sub=MISSING))), "missing_customer", id="no-sub"),
    pytest.param(bearer(lambda: token(claims(sub=""))), "missing_customer", id="empty-sub"),
    pytest.param(bearer(lambda: token(claims(sub=None))), "missing_customer", id="null-sub"),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, json.dumps(claims(sub=42)).encode())),
        "missing_customer",
        id="numeric-sub",
    ),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, json.dumps(claims(sub=["c-1"])).encode())),
        "missing_customer",
        id="list-sub",
    ),
    # claim structure
    pytest.param(bearer(lambda: token(claims(exp=MISSING))), "malformed", id="no-exp"),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, json.dumps(claims(exp=str(NOW + 600))).encode())),
        "malformed",
        id="exp-is-a-string",
    ),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, b"not json")), "malformed", id="payload-not-json"
    ),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, b'["c-1"]')), "malformed", id="payload-not-an-object"
    ),
    pytest.param(
        bearer(lambda: signed(GOOD_HEADER, GOOD_PAYLOAD + b"{}")),
        "malformed",
        id="payload-trailing-data",
    ),
    # structure of the compact serialization
    pytest.param(
        bearer(lambda: ".".join(segments(token())[:2])), "malformed", id="truncated-two-segments"
    ),
    pytest.param(bearer(lambda: segments(token())[0]), "malformed", id="truncated-one-segment"),
    pytest.param(
        bearer(lambda: with_segment(token(), 0, lambda s: s[:-1])),
        "malformed",
        id="header-short-by-one-character",
    ),
    pytest.param(bearer(lambda: f"{token()}.e30"), "malformed", id="extra-segment"),
    pytest.param(bearer(lambda: "..."), "malformed", id="only-dots"),
    pytest.param(bearer(lambda: "a" * 9000), "malformed", id="longer-than-8192-bytes"),
    pytest.param(
        bearer(lambda: with_segment(token(), 0, lambda s: s[:5] + "*" + s[5:])),
        "malformed",
        id="non-base64-in-header",
    ),
    pytest.param(
        bearer(lambda: with_segment(token(), 2, lambda s: "+" + s[1:])),
        "malformed",
        id="standard-base64-in-signature",
    ),
    pytest.param(
        bearer(lambda: with_segment(token(), 2, lambda s: s[:5] + "é" + s[5:])),
        "malformed",
        id="non-ascii-in-signature",
    ),
    # The core verifies the signature before it decodes the payload, so damage to the payload
    # segment of a pyjwt token is a bad signature; a signed non-base64 payload is malformed.
    pytest.param(
        bearer(lambda: with_segment(token(), 1, lambda s: s + "!")),
        "bad_signature",
        id="non-base64-in-payload",
    ),
    pytest.param(
        bearer(lambda: sign_input(f"{segments(token())[0]}.{segments(token())[1]}!")),
        "malformed",
        id="non-base64-in-signed-payload",
    ),
    pytest.param(
        bearer(lambda: with_segment(token(), 0, lambda s: s + "=")),
        "malformed",
        id="padding-on-header",
    ),
    pytest.param(bearer(lambda: token() + "="), "malformed", id="padding-on-signature"),
    pytest.param(
        bearer(lambda: signed(b"not json", GOOD_PAYLOAD)), "malformed", id="header-not-json"
    ),
    pytest.param(
        bearer(lambda: signed(b'"HS256"', GOOD_PAYLOAD)), "malformed", id="header-a-string"
    ),
    pytest.param(bearer(lambda: signed(b"null", GOOD_PAYLOAD)), "malformed", id="header-null"),
    pytest.param(bearer(lambda: signed(b"[]", GOOD_PAYLOAD)), "malformed", id="header-empty-list"),
    pytest.param(
        bearer(lambda: signed(b'{"kid":"k256"}', GOOD_PAYLOAD)), "malformed", id="header-no-alg"
    ),
    pytest.param(
        bearer(lambda: signed(b'{"alg":"HS256","kid":"k256","alg":"none"}', GOOD_PAYLOAD)),
        "malformed",
        id="header-duplicate-alg",
    ),
    pytest.param(
        bearer(lambda: signed(b'{"alg":"HS256","kid":"k256","crit":["exp"]}', GOOD_PAYLOAD)),
        "malformed",
        id="header-crit",
    ),
    pytest.param(
        bearer(lambda: signed(b'{"alg":"HS256","kid":7}', GOOD_PAYLOAD)),
        "malformed",
        id="header-kid-not-a-string",
    ),
    # the Authorization header
    pytest.param(lambda: None, "missing_token", id="no-authorization"),
    pytest.param(lambda: "", "malformed", id="empty-authorization"),
    pytest.param(lambda: "Bearer", "malformed", id="scheme-without-token"),
    pytest.param(lambda: "Bearer ", "malformed", id="scheme-with-empty-token"),
    pytest.param(lambda: token(), "malformed", id="token-without-scheme"),
    pytest.param(lambda: f"Basic {token()}", "malformed", id="basic-scheme"),
    pytest.param(lambda: f"Bearer\t{token()}", "malformed", id="tab-after-scheme"),
    pytest.param(lambda: f"Bearer {token()} extra", "malformed", id="text-after-the-token"),
]


def decide(router: Router, authorization: str | None):
    return router.decide("GET", "/api/accounts", authorization, "198.51.100.4:4431")


def assert_refused(decision, reason: str) -> None:
    """The refusal has ``reason``, 401, and an RFC 9457 problem with an RFC 6750 challenge."""
    assert (decision.ok, decision.reason, decision.status) == (False, reason, 401), decision.detail
    assert decision.customer_id is None and decision.cell_id is None
    assert not decision.holds_slot
    status, headers, body = decision.problem
    problem = orjson.loads(body)
    header = dict(headers)
    assert status == problem["status"] == 401
    assert problem["reason"] == reason
    assert problem["type"] == f"urn:cellgate:problem:{reason}"
    assert problem["detail"] == decision.detail
    assert header["content-type"] == "application/problem+json"
    assert header["cache-control"] == "no-store"
    if reason == "missing_token":
        # RFC 6750 3.1: no error code when the request carried no credentials.
        assert header["www-authenticate"] == "Bearer"
    else:
        assert header["www-authenticate"] == (
            f'Bearer error="invalid_token", error_description="{reason}"'
        )


@pytest.mark.parametrize("authorization", ACCEPTED)
def test_valid_tokens_are_routed(router, authorization):
    decision = decide(router, authorization())
    assert decision.ok, (decision.reason, decision.detail)
    assert (decision.status, decision.reason, decision.problem) == (200, None, None)
    assert (decision.customer_id, decision.cell_id) == ("c-1", "retail-1")
    assert decision.release() is True


@pytest.mark.parametrize(("authorization", "reason"), REFUSED)
def test_bad_tokens_are_refused_with_their_reason_code(router, authorization, reason):
    assert_refused(decide(router, authorization()), reason)
    assert router.cached_tokens == 0


@pytest.mark.parametrize(
    "header",
    [
        b'["HS256","k256"]',
        b'{"kid":"k256"}',
        b'{"alg":"HS256","kid":"k256","crit":null}',
        b'{"alg":"HS256","alg":"HS256","kid":"k256"}',
    ],
    ids=["json-array", "no-alg", "crit-null", "alg-twice"],
)
def test_a_header_that_is_not_an_object_with_one_alg_is_malformed(router, header):
    # RFC 7515 section 4: the header is a JSON object; alg is required; crit, if present, must be
    # understood; RFC 8725 3.1 warns against parsers that accept duplicate members.
    tok = signed(header, GOOD_PAYLOAD)
    assert_refused(decide(router, f"Bearer {tok}"), "malformed")


def test_a_single_key_accepts_tokens_without_kid_but_still_checks_a_named_kid(make_router):
    router, _ = make_router(keys={"k256": KEYS["k256"]})
    assert decide(router, f"Bearer {token(kid=None)}").ok
    assert_refused(decide(router, f"Bearer {token(kid='nope')}"), "unknown_kid")
    assert_refused(decide(router, f"Bearer {token(alg='HS384', kid=None)}"), "alg_not_allowed")


def test_a_fractional_exp_is_honoured_exactly(make_router):
    # RFC 7519 2: a NumericDate may be non-integer. pyjwt truncates it with int(); the core does
    # not, so this is checked here rather than in the differential test against pyjwt.
    router, clock = make_router()
    tok = token(claims(exp=NOW - LEEWAY + 0.5))
    assert decide(router, f"Bearer {tok}").ok
    clock.set(NOW + 1)
    assert_refused(decide(router, f"Bearer {tok}"), "expired")
    clock.set(NOW)
    early = token(claims(nbf=NOW + LEEWAY + 0.5))
    assert_refused(decide(router, f"Bearer {early}"), "not_yet_valid")


def test_a_customer_claim_other_than_sub_can_be_configured(make_router):
    router, _ = make_router(customer_claim="cust")
    ok = decide(router, f"Bearer {token(claims(sub=MISSING, cust='c-2'))}")
    assert (ok.ok, ok.customer_id) == (True, "c-2")
    assert_refused(decide(router, f"Bearer {token()}"), "missing_customer")
    assert_refused(decide(router, f"Bearer {token(claims(cust=7))}"), "missing_customer")


def test_without_issuer_and_audience_configured_those_claims_are_not_checked(
    make_core_router,
):
    router, _ = make_core_router(issuer=None, audience=None)
    tok = token(claims(iss="https://anyone.test", aud=MISSING))
    assert decide(router, f"Bearer {tok}").ok


# --- explicit typing (RFC 8725 3.11) and repeated members (RFC 7515 4, RFC 7519 4) ----------


def typed(typ: Any, payload: dict[str, Any] | None = None) -> str:
    """A token whose header gives ``typ`` (MISSING: no typ at all)."""
    header: dict[str, Any] = {"alg": "HS256", "kid": "k256"}
    if typ is not MISSING:
        header["typ"] = typ
    return signed(json.dumps(header).encode(), json.dumps(payload or claims()).encode())


@pytest.mark.parametrize(
    "typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"], ids=str
)
def test_a_required_typ_accepts_each_spelling_of_its_media_type(make_router, typ):
    # RFC 7515 4.1.9: media types compare case-insensitively, and "at+jwt" is short for
    # "application/at+jwt" (RFC 9068 2.1 names it).
    router, _ = make_router(typ="at+jwt")
    decision = decide(router, f"Bearer {typed(typ)}")
    assert decision.ok, decision.detail
    decision.release()


@pytest.mark.parametrize(
    ("typ", "reason"),
    [
        (MISSING, "wrong_type"),
        ("JWT", "wrong_type"),
        ("jwt", "wrong_type"),
        ("text/at+jwt", "wrong_type"),
        ("application/at+jwt; v=1", "wrong_type"),
        (7, "malformed"),
        (None, "malformed"),
        (["at+jwt"], "malformed"),
    ],
    ids=["absent", "JWT", "jwt", "text-type", "with-parameter", "number", "null", "list"],
)
def test_a_token_of_another_type_is_refused(make_router, typ, reason):
    router, _ = make_router(typ="at+jwt")
    decision = decide(router, f"Bearer {typed(typ)}")
    assert_refused(decision, reason)
    if reason == "wrong_type":
        assert "at+jwt" in decision.detail


def test_without_a_required_typ_any_string_typ_passes_but_a_non_string_is_malformed(router):
    for typ in (MISSING, "JWT", "at+jwt", "anything"):
        decision = decide(router, f"Bearer {typed(typ)}")
        assert decision.ok, (typ, decision.detail)
        decision.release()
    assert_refused(decide(router, f"Bearer {typed(1)}"), "malformed")


def repeat(obj: dict[str, Any], name: str, value: Any) -> bytes:
    """``obj`` as JSON with one more member ``name`` at its end (so ``name`` may be repeated)."""
    text = json.dumps(obj)
    return f"{text[:-1]}, {json.dumps(name)}: {json.dumps(value)}}}".encode()


HEADER = {"alg": "HS256", "kid": "k256", "typ": "JWT"}
REPEATS = [
    pytest.param(repeat(HEADER, "alg", "HS256"), GOOD_PAYLOAD, "alg", id="header-alg"),
    pytest.param(repeat(HEADER, "kid", "k256"), GOOD_PAYLOAD, "kid", id="header-kid"),
    pytest.param(repeat(HEADER, "typ", "JWT"), GOOD_PAYLOAD, "typ", id="header-typ"),
    pytest.param(repeat({**HEADER, "foo": 1}, "foo", 1), GOOD_PAYLOAD, "foo", id="header-unknown"),
    pytest.param(
        repeat({**HEADER, "jwk": {"kty": "oct"}}, "jwk", {}), GOOD_PAYLOAD, "jwk", id="header-jwk"
    ),
    pytest.param(
        json.dumps({**HEADER, "x5c": [{"a": 1}], "ext": {"k": 1}}).encode()[:-2] + b', "k": 2}}',
        GOOD_PAYLOAD,
        "k",
        id="header-nested",
    ),
    pytest.param(GOOD_HEADER, repeat(claims(), "sub", "c-2"), "sub", id="claims-sub"),
    pytest.param(GOOD_HEADER, repeat(claims(), "exp", NOW + 600), "exp", id="claims-exp"),
    pytest.param(GOOD_HEADER, repeat(claims(), "iss", ISSUER), "iss", id="claims-iss"),
    pytest.param(GOOD_HEADER, repeat(claims(foo="a"), "foo", "b"), "foo", id="claims-unknown"),
    pytest.param(
        GOOD_HEADER,
        json.dumps(claims(ctx={"a": {"b": 1}})).encode()[:-3] + b', "b": 2}}}',
        "b",
        id="claims-nested",
    ),
    pytest.param(
        GOOD_HEADER,
        json.dumps(claims(roles=[{"r": 1}])).encode()[:-3] + b', "r": 2}]}',
        "r",
        id="claims-nested-in-a-list",
    ),
    pytest.param(
        GOOD_HEADER,
        json.dumps(claims()).replace('"sub"', '"\\u0073ub"').encode()[:-1] + b', "sub": "c-1"}',
        "sub",
        id="claims-escaped-spelling",
    ),
]


@pytest.mark.parametrize(("header", "payload", "name"), REPEATS)
def test_a_member_named_twice_anywhere_is_malformed_and_named(router, header, payload, name):
    # RFC 7515 4 and RFC 7519 4 let a parser refuse repeated names or keep the last; RFC 8725 3.1
    # warns that two parsers choosing differently read one token two ways. The core refuses,
    # nested objects included (a claim object a cell or an audit reader parses again).
    tok = signed(header, payload)
    decision = decide(router, f"Bearer {tok}")
    assert_refused(decision, "malformed")
    assert f'duplicate member "{name}"' in decision.detail
    assert decision.detail.startswith("header:" if header != GOOD_HEADER else "claims:")


def test_pyjwt_takes_the_last_of_a_repeated_member_where_the_core_refuses(router):
    tok = signed(GOOD_HEADER, repeat(claims(), "sub", "c-2"))
    payload = jwt.decode(
        tok,
        KEYS["k256"][1],
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    assert payload["sub"] == "c-2"
    assert_refused(decide(router, f"Bearer {tok}"), "malformed")


def test_the_same_name_in_two_objects_is_no_repeat(router):
    payload = claims(a={"sub": 1, "x": {"sub": 2}}, b=[{"sub": 3}, {"sub": 4}])
    decision = decide(router, f"Bearer {signed(GOOD_HEADER, json.dumps(payload).encode())}")
    assert decision.ok, decision.detail
    decision.release()


def test_a_repeat_in_the_claims_is_found_only_once_the_signature_verifies(router):
    tok = signed(GOOD_HEADER, repeat(claims(), "sub", "c-2"), secret=WRONG_SECRETS["HS256"])
    assert_refused(decide(router, f"Bearer {tok}"), "bad_signature")


def test_a_string_that_is_not_utf8_encodable_is_a_python_unicode_error(router):
    # A lone surrogate cannot cross into Rust; the binding raises before the core sees it.
    # HTTP header values never carry one (the gateway hands over decoded header strings).
    with pytest.raises(UnicodeEncodeError):
        decide(router, "Bearer \ud800")


# --- RFC 7515 appendix A.1 ------------------------------------------------------------------

#: The JWS of RFC 7515 A.1: header {"typ":"JWT",\r\n "alg":"HS256"}, no kid.
RFC7515_A1_TOKEN = (
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
#: Its JWK "k": 64 bytes that are not UTF-8, so a TOML secret (a string, used as its UTF-8
#: bytes) cannot express it; the core's settings take base64url secrets, so it is given there.
RFC7515_A1_K = (
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
)
RFC7515_A1_EXP = 1300819380


def test_the_rfc7515_a1_example_verifies(make_core_router):
    key = base64.urlsafe_b64decode(RFC7515_A1_K + "==")
    # pyjwt agrees that this is the RFC's token under the RFC's key.
    assert jwt.decode(
        RFC7515_A1_TOKEN, key, algorithms=["HS256"], options={"verify_exp": False}
    ) == {"iss": "joe", "exp": RFC7515_A1_EXP, "http://example.com/is_root": True}
    # The payload names no customer: "iss" stands in for one (its check is the next test's).
    router, clock = make_core_router(
        RFC7515_A1_EXP - 3600,
        issuer=None,
        audience=None,
        customer_claim="iss",
        keys=[{"kid": "rfc7515", "alg": "HS256", "secret_b64": RFC7515_A1_K}],
    )
    decision = decide(router, f"Bearer {RFC7515_A1_TOKEN}")
    assert (decision.ok, decision.customer_id) == (True, "joe"), decision.detail
    decision.release()
    forged = with_segment(RFC7515_A1_TOKEN, 2, lambda s: "eBjf" + s[4:])
    assert_refused(decide(router, f"Bearer {forged}"), "bad_signature")
    clock.set(RFC7515_A1_EXP + LEEWAY)
    assert_refused(decide(router, f"Bearer {RFC7515_A1_TOKEN}"), "expired")


def test_the_issuer_is_checked_when_it_is_also_the_customer_claim(make_core_router):
    router, _ = make_core_router(
        RFC7515_A1_EXP - 3600,
        issuer="joe",
        audience=None,
        customer_claim="iss",
        keys=[{"kid": "rfc7515", "alg": "HS256", "secret_b64": RFC7515_A1_K}],
    )
    decision = decide(router, f"Bearer {RFC7515_A1_TOKEN}")
    assert (decision.ok, decision.customer_id) == (True, "joe"), decision.detail
    decision.release()
    other, _ = make_core_router(
        RFC7515_A1_EXP - 3600,
        issuer="jane",
        audience=None,
        customer_claim="iss",
        keys=[{"kid": "rfc7515", "alg": "HS256", "secret_b64": RFC7515_A1_K}],
    )
    assert_refused(decide(other, f"Bearer {RFC7515_A1_TOKEN}"), "wrong_issuer")


# --- the verified-token cache ---------------------------------------------------------------


def test_a_cached_token_is_refused_once_past_exp_plus_leeway(make_router):
    router, clock = make_router()
    exp = NOW + 100
    tok = f"Bearer {token(claims(exp=exp))}"
    assert decide(router, tok).ok
    assert router.cached_tokens == 1
    clock.set(exp + LEEWAY - 1)
    assert decide(router, tok).ok
    assert router.cached_tokens == 1
    clock.set(exp + LEEWAY)
    assert_refused(decide(router, tok), "expired")
    assert router.cached_tokens == 0
    clock.set(exp + 10 * LEEWAY)
    assert_refused(decide(router, tok), "expired")


def test_a_cache_hit_never_outlives_expiry_for_any_exp(make_router):
    router, clock = make_router()
    for offset in range(-LEEWAY + 1, 5):
        clock.set(NOW)
        exp = NOW + offset
        tok = f"Bearer {token(claims(exp=exp, jti=str(offset)))}"
        assert decide(router, tok).ok
        clock.set(exp + LEEWAY - 1)
        assert decide(router, tok).ok
        clock.set(exp + LEEWAY)
        assert_refused(decide(router, tok), "expired")


def test_a_tampered_token_is_refused_even_after_the_genuine_one_is_cached(router):
    genuine = token()
    assert decide(router, f"Bearer {genuine}").ok
    assert router.cached_tokens == 1
    assert_refused(decide(router, f"Bearer {tampered_payload()}"), "bad_signature")
    other_signature = with_segment(
        genuine, 2, lambda s: segments(token(alg="HS256", secret=WRONG_SECRETS["HS256"]))[2]
    )
    assert_refused(decide(router, f"Bearer {other_signature}"), "bad_signature")
    assert_refused(decide(router, f"Bearer {genuine}="), "malformed")
    assert router.cached_tokens == 1
    assert decide(router, f"bearer  {genuine}").ok


def test_a_zero_size_cache_caches_nothing_and_tokens_still_expire(make_router):
    router, clock = make_router(cache_size=0)
    tok = f"Bearer {token(claims(exp=NOW + 10))}"
    assert decide(router, tok).ok and decide(router, tok).ok
    assert router.cached_tokens == 0
    clock.set(NOW + 10 + LEEWAY)
    assert_refused(decide(router, tok), "expired")


def test_the_cache_stays_bounded(make_router):
    router, _ = make_router(cache_size=32)
    for i in range(500):
        assert decide(router, f"Bearer {token(claims(jti=str(i)))}").ok
    assert 0 < router.cached_tokens <= 32


# --- differential against pyjwt -------------------------------------------------------------

# Boundary semantics agree, so no boundary second needs excluding. RFC 7519 4.1.4: the current
# time must be before exp; 4.1.5: at or after nbf. The core refuses when now >= exp + leeway and
# when now + leeway < nbf, with now in whole seconds (the manual clock is set to T). pyjwt
# refuses when int(exp) <= now' - leeway and when int(nbf) > now' + leeway, with now' its own
# float clock in [T, T + 1) while T = int(time.time()) still holds (checked below). For integer
# exp and nbf the two tests are the same: exp + leeway <= now' iff exp + leeway <= T (iat as nbf).
#: Per dimension of a token: (a valid value, a broken one). Each example breaks a few dimensions
#: and keeps the others valid, so accepted tokens and every single refusal are common. The valid
#: and broken ranges of exp, nbf and iat meet at the leeway boundaries.
DIMENSIONS: dict[str, tuple[st.SearchStrategy, st.SearchStrategy]] = {
    "kid": (st.sampled_from(list(KEYS)), st.sampled_from(["nope", None])),
    # alg None: the algorithm of the named key; broken: any algorithm (may happen to match).
    "alg": (st.none(), st.sampled_from(sorted(KID_BY_ALG))),
    "right_key": (st.just(True), st.just(False)),
    "exp": (
        st.one_of(st.integers(-LEEWAY + 1, -LEEWAY + 3), st.integers(-LEEWAY + 1, 10**6)),
        st.one_of(
            st.just(MISSING), st.integers(-LEEWAY - 2, -LEEWAY), st.integers(-(10**6), -LEEWAY)
        ),
    ),
    "nbf": (
        st.one_of(st.just(MISSING), st.integers(LEEWAY - 2, LEEWAY), st.integers(-(10**6), 0)),
        st.one_of(st.integers(LEEWAY + 1, LEEWAY + 3), st.integers(LEEWAY + 1, 10**6)),
    ),
    "iat": (
        st.one_of(st.just(MISSING), st.integers(LEEWAY - 2, LEEWAY), st.integers(-(10**6), 0)),
        st.one_of(st.integers(LEEWAY + 1, LEEWAY + 3), st.integers(LEEWAY + 1, 10**6)),
    ),
    "iss": (st.just(ISSUER), st.sampled_from(["https://evil.test", ISSUER + "/", "", MISSING])),
    "aud": (
        st.sampled_from([AUDIENCE, [AUDIENCE], ["other", AUDIENCE]]),
        st.sampled_from(["other", ["other"], [], "", MISSING]),
    ),
    "sub": (st.sampled_from(["c-1", "c-2"]), st.sampled_from(["", 42, MISSING])),
    # A member given twice with the same value: pyjwt keeps the last (so its verdict is the one
    # without the repeat), the core refuses the token as malformed.
    "repeat": (
        st.none(),
        st.sampled_from(["header:alg", "header:kid", "header:typ", "header:foo"])
        | st.sampled_from(["claims:sub", "claims:exp", "claims:iss", "claims:foo"]),
    ),
}


def token_with_repeat(
    payload: dict[str, Any], alg: str, kid: str | None, secret: bytes, repeat: str
) -> str:
    """A token like :func:`token`'s whose header or claims give one member twice."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT", **({} if kid is None else {"kid": kid})}
    part, name = repeat.split(":")
    target = header if part == "header" else payload
    if name not in target:
        target = {**target, "foo": 1}
        name = "foo"
    if part == "header":
        header = target
    else:
        payload = target
    header_json = json.dumps(header).encode()
    payload_json = json.dumps(payload).encode()
    doubled = {"header": header_json, "claims": payload_json}[part]
    doubled = repeat_member(doubled, name, target[name])
    if part == "header":
        return signed(doubled, payload_json, alg, secret)
    return signed(header_json, doubled, alg, secret)


def repeat_member(obj_json: bytes, name: str, value: Any) -> bytes:
    """A JSON object's text with one more member ``name`` at its end."""
    return obj_json[:-1] + f", {json.dumps(name)}: {json.dumps(value)}}}".encode()


def pyjwt_accepts(tok: str, kid: str | None) -> bool:
    """pyjwt's verdict, with a kid lookup in front as a JWKS client would do."""
    if kid not in KEYS:
        return False
    alg, secret = KEYS[kid]
    try:
        payload = jwt.decode(
            tok,
            secret,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.InvalidTokenError:
        return False
    # The customer claim: a non-empty string (pyjwt itself accepts "").
    return isinstance(payload["sub"], str) and payload["sub"] != ""


def expected_reason(
    now: int,
    payload: dict[str, Any],
    kid: str | None,
    alg: str,
    right_key: bool,
    repeat: str | None = None,
) -> str | None:
    """The core's verdict, in the core's order of checks."""
    if repeat is not None and repeat.startswith("header:"):
        return "malformed"
    if kid not in KEYS:
        return "unknown_kid"
    if KEYS[kid][0] != alg:
        return "alg_not_allowed"
    if not right_key:
        return "bad_signature"
    if repeat is not None:
        return "malformed"
    if "exp" not in payload:
        return "malformed"
    if now >= payload["exp"] + LEEWAY:
        return "expired"
    if "nbf" in payload and now + LEEWAY < payload["nbf"]:
        return "not_yet_valid"
    if "iat" in payload and now + LEEWAY < payload["iat"]:
        return "not_yet_valid"
    if payload.get("iss") != ISSUER:
        return "wrong_issuer"
    aud = payload.get("aud")
    if not (aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud)):
        return "wrong_audience"
    if not (isinstance(payload.get("sub"), str) and payload["sub"]):
        return "missing_customer"
    return None


@settings(max_examples=200, deadline=None)
@given(broken=st.sets(st.sampled_from(list(DIMENSIONS)), max_size=2), data=st.data())
def test_the_core_accepts_exactly_what_pyjwt_accepts(shared, broken, data):
    router, clock = shared
    drawn = {
        name: data.draw(strategies[name in broken], label=name)
        for name, strategies in DIMENSIONS.items()
    }
    kid, right_key = drawn["kid"], drawn["right_key"]
    alg = drawn["alg"] or KEYS.get(kid, ("HS256",))[0]
    secret = KEYS[KID_BY_ALG[alg]][1] if right_key else WRONG_SECRETS[alg]
    for _ in range(5):
        now = int(time.time())
        payload = {
            **{
                name: now + drawn[name]
                for name in ("exp", "nbf", "iat")
                if drawn[name] is not MISSING
            },
            **{name: drawn[name] for name in ("iss", "aud", "sub") if drawn[name] is not MISSING},
        }
        if drawn["repeat"] is None:
            tok = token(payload, alg=alg, kid=kid, secret=secret)
        else:
            tok = token_with_repeat(payload, alg, kid, secret, drawn["repeat"])
        accepted = pyjwt_accepts(tok, kid)
        if int(time.time()) == now:
            break
    else:
        pytest.fail("the second kept changing under pyjwt")
    clock.set(now)
    decision = decide(router, f"Bearer {tok}")
    reason = expected_reason(now, payload, kid, alg, right_key, drawn["repeat"])
    event(f"reason: {reason}")
    assert decision.reason == reason, decision.detail
    assert decision.ok == (reason is None)
    # pyjwt judges a token with a repeat as the same token without it.
    assert accepted == (expected_reason(now, payload, kid, alg, right_key) is None)
    if decision.ok:
        assert decision.customer_id == drawn["sub"]
        decision.release()
    else:
        assert decision.status == 401


# --- fuzzing --------------------------------------------------------------------------------


def assert_only_refused(decision) -> None:
    assert not decision.ok
    assert decision.status == 401
    assert decision.reason in AUTH_REASONS
    assert decision.problem[0] == 401


@settings(max_examples=200, deadline=None)
@given(raw=st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1"))))
def test_arbitrary_strings_as_tokens_are_only_ever_refused(shared, raw):
    router, clock = shared
    clock.set(NOW)
    assert_only_refused(decide(router, f"Bearer {raw}"))
    assert_only_refused(decide(router, raw))


TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/!\x00é{}"


@settings(max_examples=200, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(min_value=0),
            st.sampled_from(TOKEN_ALPHABET),
        ),
        min_size=1,
        max_size=4,
    ),
    alg=st.sampled_from(sorted(KID_BY_ALG)),
)
def test_a_mutated_valid_token_is_accepted_only_if_unchanged(shared, edits, alg):
    router, clock = shared
    clock.set(NOW)
    original = token(alg=alg)
    chars = list(original)
    for op, position, char in edits:
        i = position % (len(chars) + (op == "insert"))
        if op == "replace" and chars:
            chars[i] = char
        elif op == "insert":
            chars.insert(i, char)
        elif op == "delete" and chars:
            del chars[i]
    mutated = "".join(chars)
    decision = decide(router, f"Bearer {mutated}")
    if mutated == original:
        assert decision.ok
        decision.release()
    else:
        assert_only_refused(decision)
