"""Public-key tokens: RS256/384/512, PS256/384/512, ES256/384 and EdDSA keys given as a PEM file,
PEM text, an inline JWK or a JWKS file; the RFC 8725 attacks; key errors named by where the key
was written. pyjwt (with cryptography) makes the keys and tokens; the core verifies them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cellgate import Clock, ConfigError, Router, build_router, parse_config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import event, given, settings
from hypothesis import strategies as st
from jwt.algorithms import get_default_algorithms

NOW = 1_700_000_000
ISSUER = "https://issuer.test"
AUDIENCE = "cellgate-test"
CUSTOMERS = b'{"customer_id": "c-1", "tier": "retail", "region": "us-east"}\n'
HS_SECRET = b"hs256-test-secret-0123456789abcd"


@dataclass(frozen=True)
class KeyPair:
    """A signing key of one algorithm and its public half in the forms a config can give."""

    alg: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def jwk(self) -> dict[str, str]:
        algorithm = get_default_algorithms()[self.alg]
        return json.loads(algorithm.to_jwk(self.public))


def _rsa(bits: int = 2048) -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


_RSA = _rsa()
PAIRS = {
    "RS256": KeyPair("RS256", _RSA),
    "RS384": KeyPair("RS384", _RSA),
    "RS512": KeyPair("RS512", _RSA),
    "PS256": KeyPair("PS256", _RSA),
    "PS384": KeyPair("PS384", _RSA),
    "PS512": KeyPair("PS512", _RSA),
    "ES256": KeyPair("ES256", ec.generate_private_key(ec.SECP256R1())),
    "ES384": KeyPair("ES384", ec.generate_private_key(ec.SECP384R1())),
    "EdDSA": KeyPair("EdDSA", ed25519.Ed25519PrivateKey.generate()),
}


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"sub": "c-1", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 600, "iat": NOW}
    base.update(overrides)
    return base


def token(pair: KeyPair, kid: str, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), pair.private, algorithm=pair.alg, headers={"kid": kid})


def key_table(kid: str, alg: str, **form: Any) -> str:
    lines = [f'[[jwt.keys]]\nkid = "{kid}"\nalg = "{alg}"']
    for name, value in form.items():
        if isinstance(value, dict):
            inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{name} = {{ {inline} }}")
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n"


def config(keys: str, jwks_file: str | None = None) -> str:
    jwks = f'jwks_file = "{jwks_file}"\n' if jwks_file else ""
    return f"""
[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
{jwks}
{keys}
[tiers.retail]
placement = "least_loaded"

[[cells]]
id = "retail-1"
tier = "retail"
region = "us-east"
endpoint = "http://127.0.0.1:9"
capacity = 1000

[profiles]
source = "customers.jsonl"
"""


def router(tmp_path: Path, keys: str, jwks_file: str | None = None) -> Router:
    (tmp_path / "customers.jsonl").write_bytes(CUSTOMERS)
    return build_router(parse_config(config(keys, jwks_file), tmp_path), Clock.manual(NOW))


def errors_of(tmp_path: Path, keys: str, jwks_file: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        router(tmp_path, keys, jwks_file)
    return refused.value.errors


def decide(r: Router, tok: str) -> Any:
    return r.decide("GET", "/api/accounts", f"Bearer {tok}", "127.0.0.1:5000", None)


def reason(r: Router, tok: str) -> str | None:
    decision = decide(r, tok)
    if decision.ok:
        decision.release()
        return None
    return decision.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


FORMS = ["public_key_file", "public_key_pem", "jwk", "jwks_file"]


def keys_in_form(tmp_path: Path, pair: KeyPair, kid: str, form: str) -> tuple[str, str | None]:
    """The ``[[jwt.keys]]`` text (and JWKS file name) giving ``pair``'s public key as ``form``."""
    if form == "public_key_file":
        (tmp_path / f"{kid}.pem").write_text(pair.pem())
        return key_table(kid, pair.alg, public_key_file=f"{kid}.pem"), None
    if form == "public_key_pem":
        return key_table(kid, pair.alg, public_key_pem=pair.pem()), None
    if form == "jwk":
        return key_table(kid, pair.alg, jwk=pair.jwk()), None
    jwks = {"keys": [{**pair.jwk(), "kid": kid, "alg": pair.alg, "use": "sig"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    return key_table("hs", "HS256", secret=HS_SECRET.decode()), "jwks.json"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("alg", sorted(PAIRS))
def test_every_algorithm_verifies_in_every_key_form(tmp_path: Path, alg: str, form: str):
    pair = PAIRS[alg]
    keys, jwks = keys_in_form(tmp_path, pair, "pk", form)
    r = router(tmp_path, keys, jwks)
    decision = decide(r, token(pair, "pk"))
    assert (decision.ok, decision.customer_id) == (True, "c-1"), decision.detail
    decision.release()
    # Another key of the same type does not verify it.
    other = KeyPair(alg, _other_private(alg))
    assert reason(r, token(other, "pk")) == "bad_signature"
    assert reason(r, token(pair, "pk", exp=NOW - 600)) == "expired"
    assert reason(r, token(pair, "pk", iss="https://elsewhere.test")) == "wrong_issuer"


@pytest.mark.parametrize("form", ["public_key_file", "jwks_file"])
def test_key_files_are_read_once_when_the_configuration_loads(tmp_path: Path, form: str):
    pair = PAIRS["ES256"]
    keys, jwks = keys_in_form(tmp_path, pair, "pk", form)
    (tmp_path / "customers.jsonl").write_bytes(CUSTOMERS)
    loaded = parse_config(config(keys, jwks), tmp_path)
    for file in [*tmp_path.glob("*.pem"), *tmp_path.glob("*.json")]:
        file.unlink()  # what was validated is what compiles, even if the file goes away
    decision = decide(build_router(loaded, Clock.manual(NOW)), token(pair, "pk"))
    assert decision.ok, decision.detail
    decision.release()


_OTHER: dict[str, Any] = {}


def _other_private(alg: str) -> Any:
    if alg not in _OTHER:
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}
        if alg in curve:
            _OTHER[alg] = ec.generate_private_key(curve[alg])
        elif alg == "EdDSA":
            _OTHER[alg] = ed25519.Ed25519PrivateKey.generate()
        else:
            _OTHER.setdefault("RSA", _rsa())
            _OTHER[alg] = _OTHER["RSA"]
    return _OTHER[alg]


@pytest.fixture
def mixed(tmp_path: Path) -> Router:
    """One router with an HS256 key, an RS256 key and an ES256 key."""
    keys = (
        key_table("hs", "HS256", secret=HS_SECRET.decode())
        + key_table("rs", "RS256", public_key_pem=PAIRS["RS256"].pem())
        + key_table("es", "ES256", jwk=PAIRS["ES256"].jwk())
    )
    return router(tmp_path, keys)


def _hs256_signed(header: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims()).encode())}"
    tag = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(tag)}"


def test_hs256_signed_with_the_rsa_public_key_is_refused(mixed: Router):
    # RFC 8725 2.1: the classic confusion, an HMAC keyed with the RSA public key's own bytes.
    pem = PAIRS["RS256"].pem().encode()
    forged = _hs256_signed({"alg": "HS256", "kid": "rs"}, pem)
    assert reason(mixed, forged) == "alg_not_allowed"
    der = PAIRS["RS256"].public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert reason(mixed, _hs256_signed({"alg": "HS256", "kid": "rs"}, der)) == "alg_not_allowed"


def test_a_kid_pointing_at_another_keys_type_is_refused(mixed: Router):
    assert reason(mixed, token(PAIRS["ES256"], "rs")) == "alg_not_allowed"
    assert reason(mixed, token(PAIRS["RS256"], "es")) == "alg_not_allowed"
    assert reason(mixed, token(PAIRS["RS256"], "hs")) == "alg_not_allowed"
    assert reason(mixed, token(PAIRS["PS256"], "rs")) == "alg_not_allowed"
    assert reason(mixed, token(PAIRS["RS256"], "nobody")) == "unknown_kid"
    for good in (token(PAIRS["RS256"], "rs"), token(PAIRS["ES256"], "es")):
        assert reason(mixed, good) is None


def test_alg_none_and_huge_headers_are_refused(mixed: Router):
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "rs"})
    assert reason(mixed, unsigned) == "alg_not_allowed"
    huge = jwt.encode(
        claims(),
        PAIRS["RS256"].private,
        algorithm="RS256",
        headers={
            "kid": "rs",
            "x": "a" * 20_000,
        },
    )
    assert reason(mixed, huge) == "malformed"


def test_tampered_and_truncated_public_key_tokens_are_refused(mixed: Router):
    good = token(PAIRS["ES256"], "es")
    head, payload, signature = good.split(".")
    forged_payload = b64(json.dumps(claims(sub="c-2")).encode())
    assert reason(mixed, f"{head}.{forged_payload}.{signature}") == "bad_signature"
    assert reason(mixed, f"{head}.{payload}.{signature[:-4]}") in ("bad_signature", "malformed")
    assert reason(mixed, f"{head}.{payload}.!!!") == "malformed"


def test_a_key_that_does_not_fit_its_algorithm_is_a_config_error(tmp_path: Path):
    errors = errors_of(
        tmp_path,
        key_table("a", "ES256", public_key_pem=PAIRS["RS256"].pem())
        + key_table("b", "RS256", jwk=PAIRS["EdDSA"].jwk())
        + key_table("c", "ES384", jwk=PAIRS["ES256"].jwk())
        + key_table("d", "RS256", public_key_pem=KeyPair("RS256", _rsa(1024)).pem()),
    )
    assert errors == [
        "jwt.keys[0].public key: ES256 cannot use an RSA key (RFC 7518 3.1)",
        "jwt.keys[1].public key: RS256 cannot use an Ed25519 key (RFC 7518 3.1)",
        "jwt.keys[2].public key: ES384 cannot use an EC P-256 key (RFC 7518 3.1)",
        "jwt.keys[3].public key: RS256 needs an RSA modulus of at least 2048 bits, got 1024",
    ]


def test_key_forms_are_checked_with_their_paths(tmp_path: Path):
    private_pem = (
        PAIRS["EdDSA"]
        .private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    pkcs1 = PAIRS["RS256"].public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
    )
    (tmp_path / "pkcs1.pem").write_bytes(pkcs1)
    errors = errors_of(
        tmp_path,
        key_table("a", "RS256", secret="x" * 40)
        + key_table("b", "HS256", public_key_pem=PAIRS["RS256"].pem())
        + key_table("c", "EdDSA", public_key_pem=private_pem)
        + key_table("d", "RS256", public_key_file="pkcs1.pem")
        + key_table("e", "RS256", public_key_file="missing.pem")
        + key_table("f", "EdDSA", jwk={**PAIRS["EdDSA"].jwk(), "d": "c2VjcmV0"})
        + key_table("g", "ES256")
        + key_table("h", "HS256", secret_b64=b64(b"\x00" * 31)),
    )
    assert errors[0] == "jwt.keys[0]: RS256 takes a public key, not a shared secret"
    assert errors[1] == "jwt.keys[1]: HS256 takes a shared secret, not a public key"
    assert errors[2] == "jwt.keys[2].public_key_pem: holds a private key; give only the public key"
    assert errors[3].startswith("jwt.keys[3].public_key_file: holds a PKCS#1 RSA PUBLIC KEY")
    assert errors[4].startswith("jwt.keys[4].public_key_file: cannot read")
    assert errors[5] == "jwt.keys[5].jwk: holds private key material (d)"
    assert errors[6] == "jwt.keys[6]: give exactly one of public_key_file, public_key_pem or jwk"
    assert errors[7] == "jwt.keys[7].secret: HS256 needs at least 32 bytes, got 31"
    assert len(errors) == 8


def test_a_binary_hs256_secret_is_given_as_base64url(tmp_path: Path):
    secret = bytes(range(200, 232))  # not UTF-8: only secret_b64 can say it
    r = router(tmp_path, key_table("bin", "HS256", secret_b64=b64(secret)))
    tok = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "bin"})
    assert reason(r, tok) is None


def test_jwks_keys_need_kid_and_alg_and_are_named_in_errors(tmp_path: Path):
    rs, es = PAIRS["RS256"].jwk(), PAIRS["ES256"].jwk()
    jwks = {
        "keys": [
            {**rs, "kid": "ok", "alg": "RS256"},
            {**rs, "alg": "RS256"},
            {**es, "kid": "no-alg"},
            {**es, "kid": "enc", "alg": "ES256", "use": "enc"},
            {**rs, "kid": "wrong", "alg": "ES256"},
            {"kty": "oct", "kid": "sym", "alg": "HS256", "k": "c2VjcmV0"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    errors = errors_of(tmp_path, key_table("hs", "HS256", secret=HS_SECRET.decode()), "jwks.json")
    assert errors[0] == "jwt.jwks_file keys[1].kid: required"
    assert errors[1].startswith("jwt.jwks_file keys[2].alg: must be one of")
    assert errors[2] == "jwt.jwks_file keys[3].use: must be \"sig\", got 'enc'"
    assert errors[3].startswith("jwt.jwks_file keys[5].alg: HS256 keys are secrets")
    assert errors[4] == "jwt.jwks_file keys[5]: holds private key material (k)"
    assert len(errors) == 5


def test_the_cores_refusal_of_a_jwks_key_names_the_entry(tmp_path: Path):
    jwks = {
        "keys": [
            {**PAIRS["ES256"].jwk(), "kid": "ok", "alg": "ES256"},
            {**PAIRS["RS256"].jwk(), "kid": "wrong", "alg": "ES256"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    errors = errors_of(tmp_path, key_table("hs", "HS256", secret=HS_SECRET.decode()), "jwks.json")
    assert errors == [
        "jwt.jwks_file keys[1] (kid 'wrong').public key: ES256 cannot use an RSA key (RFC 7518 3.1)"
    ]


def test_a_duplicate_kid_across_keys_and_jwks_is_refused(tmp_path: Path):
    jwks = {"keys": [{**PAIRS["EdDSA"].jwk(), "kid": "hs", "alg": "EdDSA"}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    errors = errors_of(tmp_path, key_table("hs", "HS256", secret=HS_SECRET.decode()), "jwks.json")
    assert errors == ["jwt.jwks_file keys[0] (kid 'hs').kid: duplicate kid 'hs' (also jwt.keys[0])"]


# --- differential: the core and pyjwt agree on public-key tokens ----------------------------

MISSING = object()
#: Per claim: (valid values, broken ones), offsets from now in seconds for the times; the two
#: meet at the 30 s leeway. Each example breaks at most one claim, so both verdicts are common.
CLAIMS: dict[str, tuple[list[Any], list[Any]]] = {
    "exp": ([-29, -1, 0, 1, 29, 30, 31, 10_000], [MISSING, -30, -31, -10_000]),
    "nbf": ([MISSING, -10_000, -1, 0, 1, 29, 30], [31, 10_000]),
    "iat": ([MISSING, -10_000, -1, 0, 29, 30], [31, 10_000]),
    "iss": ([ISSUER], ["https://evil.test", MISSING]),
    "aud": ([AUDIENCE, [AUDIENCE, "x"]], ["other", MISSING]),
    "sub": (["c-1", "c-2"], ["", 7, MISSING]),
}


@pytest.fixture(scope="module")
def public_router(tmp_path_factory: pytest.TempPathFactory) -> tuple[Router, Clock]:
    directory = tmp_path_factory.mktemp("differential")
    keys = "".join(
        key_table(alg.lower(), alg, public_key_pem=PAIRS[alg].pem())
        for alg in ("RS256", "PS256", "ES256", "ES384", "EdDSA")
    )
    (directory / "customers.jsonl").write_bytes(
        CUSTOMERS + b'{"customer_id": "c-2", "tier": "retail", "region": "us-east"}\n'
    )
    text = config(keys).replace("[jwt]\n", "[jwt]\nleeway_s = 30\n", 1)
    clock = Clock.manual(NOW)
    return build_router(parse_config(text, directory), clock), clock


def pyjwt_customer(tok: str, alg: str) -> str | None:
    """pyjwt's verdict: the customer when it accepts (and the core's customer rule holds)."""
    try:
        payload = jwt.decode(
            tok,
            PAIRS[alg].public,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=30,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.InvalidTokenError:
        return None
    sub = payload["sub"]
    return sub if isinstance(sub, str) and sub else None


@settings(max_examples=150, deadline=None)
@given(
    alg=st.sampled_from(["RS256", "PS256", "ES256", "ES384", "EdDSA"]),
    broken=st.sampled_from([None, None, None, "key", *CLAIMS]),
    data=st.data(),
)
def test_the_core_accepts_exactly_what_pyjwt_accepts(public_router, alg, broken, data):
    now = int(time.time())
    drawn = {
        name: data.draw(st.sampled_from(choices[name == broken]), label=name)
        for name, choices in CLAIMS.items()
    }
    payload = {
        name: (now + value if name in ("exp", "nbf", "iat") else value)
        for name, value in drawn.items()
        if value is not MISSING
    }
    other_key = broken == "key"
    signer = _other_private(alg) if other_key else PAIRS[alg].private
    tok = jwt.encode(payload, signer, algorithm=alg, headers={"kid": alg.lower()})
    # pyjwt reads its own clock; the core's manual clock is set to the same second, and an
    # example is retried when the second turned meanwhile.
    expected = pyjwt_customer(tok, alg)
    if int(time.time()) != now:
        return
    router, clock = public_router
    clock.set(now)
    decision = decide(router, tok)
    event(f"accepted: {expected is not None}")
    assert decision.customer_id == expected, (decision.reason, decision.detail, payload)
    if decision.ok:
        decision.release()
