"""Bearer-token verification as ``rust/auth/verifier.rs`` states it, in plain Python.

The checks run in the core's order and the first failure names the reason: the header form, the
token's size and three parts, strict base64url (no padding, canonical trailing bits), the JOSE
header (a JSON object with one string ``alg``, an optional string ``kid``, an optional string
``typ``, no ``crit``), ``alg`` ``none``, the configured ``typ`` (compared as a media type), the
key by ``kid`` (the only key when there is no ``kid`` and one key), the key's one algorithm, the
signature (checked by pyjwt's algorithm objects), then the claims: their types as the core's
serde visitor reads them, ``exp`` (or its absence when required), ``nbf``, ``iat``, ``iss``,
``aud``, the customer claim. A member named twice in any object of the header or the claims,
nested ones included, is malformed (pyjwt would take the last one). A verified token is cached
until ``ceil(exp + leeway)`` (or ``cache_ttl_s`` without ``exp``) and revocations apply to cached
tokens too. Step-up proof is judged per request from what verification kept: whether
``amr``/``acr`` qualify and ``auth_time``.

The cache here is unbounded (the core's evicts an arbitrary entry when a shard fills; with the
clock moving forward the cache never changes an answer, so only its bound is left out).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_der_public_key

__all__ = ["Refusal", "TokenVerifier", "Verified"]

MAX_TOKEN_BYTES = 8192
#: What Rust's ``str::trim`` strips: the Unicode White_Space characters.
UNICODE_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680"
UNICODE_WHITE_SPACE += "".join(map(chr, range(0x2000, 0x200B)))
UNICODE_WHITE_SPACE += "\u2028\u2029\u202f\u205f\u3000"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class Refusal(Exception):
    """Why a request is refused: a reason code, a detail and the refusal's response fields."""

    def __init__(self, reason: str, detail: str, fields: list[tuple[str, str]] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.fields = reason, detail, fields or []


@dataclass(frozen=True)
class Verified:
    """What a verified token established (``rust/auth/verifier.rs``'s ``Verified``)."""

    customer: str
    cache_until_s: int
    jti: str | None
    issued_at_s: float | None
    methods_ok: bool
    auth_time_s: float | None


class JsonObject(list):
    """A JSON object as its (key, value) pairs in order; a member named twice is refused."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise ValueError(f"duplicate member {name!r}")
            seen.add(name)
        super().__init__(pairs)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def parse_json(data: bytes, what: str) -> Any:
    """Parses JSON as serde_json does (UTF-8, no NaN, no overflowing numbers), else malformed."""
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=JsonObject,
            parse_float=_finite,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise Refusal("malformed", f"{what}: {err}") from None


def decode_base64url(part: str, what: str) -> bytes:
    """Strict base64url without padding, as the core's engine decodes: canonical bits only."""
    canonical = False
    if _BASE64URL.fullmatch(part) and len(part) % 4 != 1:
        try:
            data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            canonical = base64.urlsafe_b64encode(data).rstrip(b"=").decode() == part
        except (binascii.Error, ValueError):
            pass
    if not canonical:
        raise Refusal("malformed", f"{what}: not base64url")
    return data


def is_number(value: Any) -> bool:
    """Whether serde reads ``value`` as an f64 (any JSON number, never a bool)."""
    return type(value) in (int, float)


def ascii_lower(text: str) -> str:
    """``text`` with only A-Z folded, as Rust's ``eq_ignore_ascii_case`` compares."""
    return text.translate({c: c + 32 for c in range(ord("A"), ord("Z") + 1)})


def full_media_type(typ: str) -> str:
    """A ``typ`` value as the media type it names (RFC 7515 section 4.1.9), ASCII-lowercased:
    ``application/`` is understood before a value without a ``/``."""
    return ascii_lower(typ if "/" in typ else f"application/{typ}")


class TokenVerifier:
    """Bearer-token checks in the core's order, with its reason codes; pyjwt checks signatures."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.step_up = settings["step_up"]
        self.keys: dict[str, tuple[str, Any]] = {}
        for key in settings["keys"]:
            algorithm = jwt.get_algorithm_by_name(key["alg"])
            if "secret_b64" in key and key["secret_b64"] is not None:
                material: Any = decode_base64url(key["secret_b64"], "secret")
            elif key.get("spki_b64") is not None:
                material = load_der_public_key(decode_base64url(key["spki_b64"], "spki"))
            else:
                material = algorithm.from_jwk(json.dumps(key["jwk"]))
            self.keys[key["kid"]] = (key["alg"], algorithm.prepare_key(material))
        self.cache: dict[str, Verified] = {}
        self.revoked_jti: dict[str, int] = {}
        self.revoked_customers: dict[str, float] = {}

    def verify_header(self, authorization: str | None, now_s: int) -> Verified:
        """The verified token of an ``Authorization`` value, or a :class:`Refusal`."""
        if authorization is None:
            raise Refusal("missing_token", "no Authorization header")
        scheme, space, token = authorization.partition(" ")
        if not space or ascii_lower(scheme) != "bearer":
            raise Refusal("malformed", "Authorization is not of the form 'Bearer <token>'")
        token = token.strip(UNICODE_WHITE_SPACE)
        verified = self.cache.get(token)
        if verified is None or now_s >= verified.cache_until_s:
            self.cache.pop(token, None)
            verified = self.verify_uncached(token, now_s)
            if self.settings["cache_size"] > 0 and verified.cache_until_s > now_s:
                self.cache[token] = verified
        self.check_revocations(verified)
        return verified

    def check_revocations(self, verified: Verified) -> None:
        """Refuses a revoked ``jti``, or a customer's token issued before its cut-off."""
        if verified.jti is not None and verified.jti in self.revoked_jti:
            raise Refusal("token_revoked", f"token {verified.jti!r} is revoked")
        before = self.revoked_customers.get(verified.customer)
        if before is not None and (verified.issued_at_s is None or verified.issued_at_s < before):
            raise Refusal("token_revoked", f"tokens issued before {before} are revoked")

    def verify_uncached(self, token: str, now_s: int) -> Verified:
        """The structural, signature and claim checks, first failure wins."""
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise Refusal("malformed", f"token longer than {MAX_TOKEN_BYTES} bytes")
        parts = token.split(".")
        if len(parts) != 3:
            raise Refusal("malformed", "a JWS compact token has exactly three parts")
        header_b64, payload_b64, signature_b64 = parts
        alg, kid, typ = self.read_header(decode_base64url(header_b64, "header"))
        if ascii_lower(alg) == "none":
            raise Refusal("alg_not_allowed", "alg none is never accepted")
        expected_typ = self.settings.get("typ")
        if expected_typ is not None and (
            typ is None or full_media_type(typ) != full_media_type(expected_typ)
        ):
            raise Refusal("wrong_type", f"typ {typ!r} is not {expected_typ!r}")
        if kid is None and len(self.keys) == 1:
            kid = next(iter(self.keys))
        if kid not in self.keys:
            raise Refusal("unknown_kid", f"no key with kid {kid!r}")
        key_alg, key = self.keys[kid]
        if key_alg != alg:
            raise Refusal("alg_not_allowed", f"key allows {key_alg}, token uses {alg}")
        signature = decode_base64url(signature_b64, "signature")
        signing_input = f"{header_b64}.{payload_b64}".encode()
        if not jwt.get_algorithm_by_name(alg).verify(signing_input, key, signature):
            raise Refusal("bad_signature", "signature does not verify")
        return self.check_claims(decode_base64url(payload_b64, "payload"), now_s)

    @staticmethod
    def read_header(data: bytes) -> tuple[str, str | None, str | None]:
        """``alg``, ``kid`` and ``typ`` of a JOSE header: an object, a string ``alg``, no
        ``crit``."""
        header = parse_json(data, "header")
        if type(header) is not JsonObject:
            raise Refusal("malformed", "header: not a JSON object")
        fields = dict(header)  # the names are unique (JsonObject refuses repeats)
        alg, kid, typ = fields.get("alg"), fields.get("kid"), fields.get("typ", "")
        if not isinstance(alg, str) or "crit" in fields:
            raise Refusal("malformed", "header: alg missing or not a string, or crit present")
        if not isinstance(kid, str | None) or not isinstance(typ, str):
            raise Refusal("malformed", "header: kid or typ not a string")
        return alg, kid, fields.get("typ")

    def read_claims(self, data: bytes) -> dict[str, Any]:
        """The claims the core reads, typed as its serde visitor types them (else malformed)."""
        claims_object = parse_json(data, "claims")
        if type(claims_object) is not JsonObject:
            raise Refusal("malformed", "claims: not a JSON object")
        customer_claim = self.settings["customer_claim"]
        claims: dict[str, Any] = {"customer": None, "customer_not_string": False}
        for name, value in claims_object:
            names_customer = name == customer_claim
            if name in ("exp", "nbf", "iat", "auth_time"):
                if not is_number(value):
                    raise Refusal("malformed", f"claims: {name} is not a number")
                claims[name] = float(value)
                if names_customer:
                    claims["customer_not_string"] = True
            elif name in ("iss", "jti", "acr", "aud", "amr"):
                strings = type(value) is list and all(isinstance(v, str) for v in value)
                one_string = isinstance(value, str) and name != "amr"
                if not (one_string or (strings and name in ("aud", "amr"))):
                    raise Refusal("malformed", f"claims: {name} has the wrong type")
                claims[name] = value
                # Any registered claim may name the customer. The core reads it only from iss
                # and aud: a jti or acr customer claim is refused as missing_customer (the
                # strict xfail in tests/test_reference_agreement.py).
                if names_customer:
                    if isinstance(value, str):
                        claims["customer"] = value
                    else:
                        claims["customer_not_string"] = True
            elif names_customer:
                if isinstance(value, str):
                    claims["customer"] = value
                elif value is not None:
                    claims["customer_not_string"] = True
        return claims

    def check_claims(self, payload: bytes, now_s: int) -> Verified:
        """The claim checks in the core's order, then what the token established."""
        claims = self.read_claims(payload)
        now, leeway = float(now_s), float(self.settings["leeway_s"])
        exp = claims.get("exp")
        if exp is not None and now >= exp + leeway:
            raise Refusal("expired", f"expired at {exp}")
        if exp is None and self.settings["require_exp"]:
            raise Refusal("malformed", "claims: exp is required")
        for name in ("nbf", "iat"):
            if name in claims and now + leeway < claims[name]:
                raise Refusal("not_yet_valid", f"{name} {claims[name]} is in the future")
        issuer, audience = self.settings["issuer"], self.settings["audience"]
        if issuer is not None and claims.get("iss") != issuer:
            raise Refusal("wrong_issuer", f"iss is not {issuer!r}")
        aud = claims.get("aud")
        aud_ok = aud == audience or (isinstance(aud, list) and audience in aud)
        if audience is not None and not aud_ok:
            raise Refusal("wrong_audience", f"aud does not include {audience!r}")
        if not claims["customer"]:
            raise Refusal("missing_customer", "customer claim missing, empty or not a string")
        if exp is not None:  # `(exp + leeway).ceil() as u64` saturates
            cache_until_s = min(max(math.ceil(exp + leeway), 0), 2**64 - 1)
        else:
            cache_until_s = now_s + self.settings["cache_ttl_s"]
        wanted_amr, wanted_acr = self.step_up["amr"], self.step_up["acr"]
        amr_ok = wanted_amr is None or wanted_amr in claims.get("amr", [])
        acr_ok = not wanted_acr or claims.get("acr") in wanted_acr
        return Verified(
            customer=claims["customer"],
            cache_until_s=cache_until_s,
            jti=claims.get("jti"),
            issued_at_s=claims.get("iat"),
            methods_ok=amr_ok and acr_ok,
            auth_time_s=claims.get("auth_time"),
        )

    def step_up_missing(self, verified: Verified, now_s: int) -> str | None:
        """What the token lacks of the configured step-up proof; None when it proves it."""
        amr, acr, max_age_s = self.step_up["amr"], self.step_up["acr"], self.step_up["max_age_s"]
        if amr is None and not acr and max_age_s is None:
            return "no step-up proof is configured for this gateway"
        missing = []
        if not verified.methods_ok:
            missing += [f"amr including {amr!r}"] if amr is not None else []
            missing += [f"acr one of {acr}"] if acr else []
        auth_time = verified.auth_time_s
        if max_age_s is not None and not (auth_time is not None and now_s - auth_time <= max_age_s):
            missing.append(f"auth_time within the last {max_age_s} s")
        return f"re-authenticate with {', '.join(missing)}" if missing else None
