"""RFC 9421 request signatures and RFC 9530 digests: the RFC's own vectors, agreement with an
independent implementation (pyauth's http-message-signatures), and every refusal reason."""

from __future__ import annotations

import base64
import datetime
import time
from dataclasses import dataclass, field

import http_message_signatures as hms
import pytest
from cellgate import RequestVerifier, SignatureError, sign_request, verify_request
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_der_private_key
from http_message_signatures import algorithms

# RFC 9421 appendix B.1.5 and B.1.4: the shared secret and the Ed25519 key pair.
TEST_SHARED_SECRET = (
    "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="
)
TEST_ED25519_PKCS8 = "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF"
TEST_ED25519_SPKI = "MCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs="
TEST_ED25519_JWK = {
    "kty": "OKP",
    "crv": "Ed25519",
    "kid": "test-key-ed25519",
    "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs",
}

HMAC_KEY = {"keyid": "test-shared-secret", "alg": "hmac-sha256", "secret_b64": TEST_SHARED_SECRET}
ED25519_KEY = {"keyid": "test-key-ed25519", "alg": "ed25519", "pkcs8_b64": TEST_ED25519_PKCS8}

# RFC 9421 appendix B.2: the test-request.
RFC_CREATED = 1618884473
RFC_HEADERS = [
    ("Host", "example.com"),
    ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("Content-Type", "application/json"),
    (
        "Content-Digest",
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    ),
    ("Content-Length", "18"),
]
RFC_BODY = b'{"hello": "world"}'
RFC_REQUEST = ("POST", "example.com", "/foo", "param=Value&Pet=dog")

B25_INPUT = (
    'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"'
)
B25_SIGNATURE = "sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:"
B26_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
B26_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1"
    "u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)

# RFC 9530 appendix B.1 (the JSON object followed by LF) and section 2's sha-512 of it.
HELLO_LF = b'{"hello": "world"}\n'
HELLO_LF_SHA256 = "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"
HELLO_LF_SHA512 = (
    "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCs"
    "yRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:"
)

GATEWAY_HEADERS = [
    ("host", "cell.internal"),
    ("content-type", "application/json"),
    ("x-request-id", "rid-1"),
    ("x-cell-id", "hnw-us-east-1"),
    ("x-customer-id", "cust-9"),
    ("x-risk-level", "low"),
]
GATEWAY_REQUEST = ("POST", "cell.internal", "/api/transfers", "dry=1")
BODY = b'{"amount": 10}'
NOW = 1_700_000_000


def rfc_verifier(*keys: dict) -> RequestVerifier:
    return RequestVerifier(list(keys), required=[])


def both_verifier() -> RequestVerifier:
    return RequestVerifier([HMAC_KEY, ED25519_KEY])


def signed(
    key: dict = HMAC_KEY,
    *,
    body: bytes = BODY,
    now_s: float = NOW,
    nonce: str = "rid-1.a",
    headers: list[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """The gateway's request with the headers `sign_request` adds."""
    headers = list(GATEWAY_HEADERS if headers is None else headers)
    return headers + sign_request(key, *GATEWAY_REQUEST, headers, body, now_s, nonce)


def rfc_sign(key: dict, label: str, components: list[str]) -> list[tuple[str, str]]:
    return sign_request(
        key,
        *RFC_REQUEST,
        RFC_HEADERS,
        b"",
        RFC_CREATED,
        "",
        label=label,
        ttl_s=0,
        covered_headers=[],
        components=components,
        include_alg=False,
    )


def test_rfc_9421_b_2_5_through_sign_request() -> None:
    added = rfc_sign(HMAC_KEY, "sig-b25", ["date", "@authority", "content-type"])
    assert added == [("signature-input", B25_INPUT), ("signature", B25_SIGNATURE)]


def test_rfc_9421_b_2_6_through_sign_request() -> None:
    components = ["date", "@method", "@path", "@authority", "content-type", "content-length"]
    added = rfc_sign(ED25519_KEY, "sig-b26", components)
    assert added == [("signature-input", B26_INPUT), ("signature", B26_SIGNATURE)]


@pytest.mark.parametrize(
    ("key", "label", "signature_input", "signature"),
    [
        (HMAC_KEY, "sig-b25", B25_INPUT, B25_SIGNATURE),
        (ED25519_KEY, "sig-b26", B26_INPUT, B26_SIGNATURE),
        (
            {"keyid": "test-key-ed25519", "alg": "ed25519", "spki_b64": TEST_ED25519_SPKI},
            "sig-b26",
            B26_INPUT,
            B26_SIGNATURE,
        ),
        (
            {"keyid": "test-key-ed25519", "alg": "ed25519", "jwk": TEST_ED25519_JWK},
            "sig-b26",
            B26_INPUT,
            B26_SIGNATURE,
        ),
    ],
)
def test_the_rfc_signatures_verify(
    key: dict, label: str, signature_input: str, signature: str
) -> None:
    headers = [*RFC_HEADERS, ("Signature-Input", signature_input), ("Signature", signature)]
    verified = rfc_verifier(key).verify(*RFC_REQUEST, headers, b"", now_s=RFC_CREATED + 1)
    assert verified["label"] == label
    assert verified["keyid"] == key["keyid"]
    assert verified["alg"] == key["alg"]
    assert verified["created"] == RFC_CREATED
    assert verified["expires"] is None
    assert verified["nonce"] is None


def test_the_rfc_examples_do_not_cover_the_body_this_verifier_demands() -> None:
    headers = [*RFC_HEADERS, ("Signature-Input", B26_INPUT), ("Signature", B26_SIGNATURE)]
    with pytest.raises(SignatureError) as refused:
        rfc_verifier(ED25519_KEY).verify(*RFC_REQUEST, headers, RFC_BODY, now_s=RFC_CREATED)
    assert refused.value.reason == "digest_mismatch"


def test_rfc_9530_digests() -> None:
    def digest(body: bytes, sha512: bool) -> str:
        added = dict(
            sign_request(HMAC_KEY, "POST", "a", "/", "", [], body, NOW, "n", digest_sha512=sha512)
        )
        return added["content-digest"]

    assert digest(HELLO_LF, False) == HELLO_LF_SHA256
    assert digest(HELLO_LF, True) == f"{HELLO_LF_SHA256}, {HELLO_LF_SHA512}"
    # RFC 9421's test-request carries the sha-512 of its 18-byte body.
    rfc_digest = dict(RFC_HEADERS)["Content-Digest"]
    assert digest(RFC_BODY, True).endswith(f", {rfc_digest}")


def test_a_digest_with_sha512_verifies_and_the_body_is_checked() -> None:
    headers = list(GATEWAY_HEADERS)
    added = sign_request(
        ED25519_KEY, *GATEWAY_REQUEST, headers, HELLO_LF, NOW, "n", digest_sha512=True
    )
    assert dict(added)["content-digest"] == f"{HELLO_LF_SHA256}, {HELLO_LF_SHA512}"
    verified = both_verifier().verify(*GATEWAY_REQUEST, headers + added, HELLO_LF, now_s=NOW)
    assert "content-digest" in verified["covered"]


def test_what_the_gateway_signs_verifies() -> None:
    for key in (HMAC_KEY, ED25519_KEY):
        verified = both_verifier().verify(*GATEWAY_REQUEST, signed(key), BODY, now_s=NOW + 1)
        assert verified == {
            "label": "cellgate",
            "keyid": key["keyid"],
            "alg": key["alg"],
            "created": NOW,
            "expires": NOW + 60,
            "nonce": "rid-1.a",
            "covered": [
                "@method",
                "@authority",
                "@path",
                "@query",
                "content-digest",
                "x-request-id",
                "x-cell-id",
                "x-customer-id",
                "x-risk-level",
            ],
        }


def test_headers_may_be_a_mapping_and_verify_request_is_the_same_call() -> None:
    headers = dict(signed())
    verified = verify_request(both_verifier(), *GATEWAY_REQUEST, headers, BODY, now_s=NOW)
    assert verified["keyid"] == "test-shared-secret"


def test_the_system_clock_is_the_default() -> None:
    now = time.time()
    verified = both_verifier().verify(*GATEWAY_REQUEST, signed(now_s=now), BODY)
    assert verified["created"] == int(now)


# --- agreement with pyauth's http-message-signatures -------------------------------------


@dataclass
class Message:
    """A request as http-message-signatures reads it."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def hms_keys() -> hms.MappingKeyResolver:
    private = load_der_private_key(base64.b64decode(TEST_ED25519_PKCS8), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    secret = base64.b64decode(TEST_SHARED_SECRET)
    return hms.MappingKeyResolver(
        public_keys={"test-key-ed25519": private.public_key(), "test-shared-secret": secret},
        private_keys={"test-key-ed25519": private, "test-shared-secret": secret},
    )


ALGORITHMS = {"hmac-sha256": algorithms.HMAC_SHA256, "ed25519": algorithms.ED25519}
GATEWAY_URL = "https://cell.internal/api/transfers?dry=1"


@pytest.mark.parametrize("key", [HMAC_KEY, ED25519_KEY], ids=["hmac-sha256", "ed25519"])
def test_http_message_signatures_verifies_what_we_sign(key: dict) -> None:
    now = time.time()
    message = Message("POST", GATEWAY_URL, dict(signed(key, now_s=now)))
    verifier = hms.HTTPMessageVerifier(
        signature_algorithm=ALGORITHMS[key["alg"]], key_resolver=hms_keys()
    )
    (result,) = verifier.verify(
        message,
        require_components=("@method", "@authority", "@path", "@query", "x-customer-id"),
        body=BODY,
    )
    assert result.label == "cellgate"
    assert result.parameters["keyid"] == key["keyid"]
    assert result.nonce == "rid-1.a"
    assert result.body == BODY

    message.headers["x-customer-id"] = "cust-1"
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(message)
    message.headers["x-customer-id"] = "cust-9"
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(message, body=b'{"amount": 1000}')


def hms_signed(alg: str, *, nonce: str = "n-1", body: bytes = BODY) -> tuple[Message, int]:
    now = int(time.time())
    message = Message("POST", GATEWAY_URL, dict(GATEWAY_HEADERS))
    signer = hms.HTTPMessageSigner(signature_algorithm=ALGORITHMS[alg], key_resolver=hms_keys())
    signer.sign(
        message,
        key_id="test-shared-secret" if alg == "hmac-sha256" else "test-key-ed25519",
        created=datetime.datetime.fromtimestamp(now, tz=datetime.UTC),
        expires=datetime.datetime.fromtimestamp(now + 60, tz=datetime.UTC),
        nonce=nonce,
        covered_component_ids=("@method", "@authority", "@path", "@query", "x-request-id"),
        body=body,
    )
    return message, now


@pytest.mark.parametrize("alg", ["hmac-sha256", "ed25519"])
def test_we_verify_what_http_message_signatures_signs(alg: str) -> None:
    message, now = hms_signed(alg)
    headers = list(message.headers.items())
    verified = both_verifier().verify(*GATEWAY_REQUEST, headers, BODY, now_s=now)
    assert verified["label"] == "pyhms"
    assert verified["alg"] == alg
    assert verified["nonce"] == "n-1"
    assert verified["expires"] == now + 60
    assert "content-digest" in verified["covered"]


@pytest.mark.parametrize("alg", ["hmac-sha256", "ed25519"])
def test_we_refuse_what_http_message_signatures_signs_when_it_should_fail(alg: str) -> None:
    message, now = hms_signed(alg)
    headers = list(message.headers.items())
    method, authority, path, query = GATEWAY_REQUEST
    cases = {
        "bad_signature": lambda v: v.verify(method, authority, "/api/other", query, headers, BODY),
        "digest_mismatch": lambda v: v.verify(method, authority, path, query, headers, b"{}"),
    }
    for reason, attempt in cases.items():
        with pytest.raises(SignatureError) as refused:
            attempt(both_verifier())
        assert refused.value.reason == reason
    other_secret = base64.urlsafe_b64encode(b"s" * 32).decode()
    wrong_keys = [
        {"keyid": "test-shared-secret", "alg": "hmac-sha256", "secret_b64": other_secret},
        {"keyid": "test-key-ed25519", "alg": "ed25519", "jwk": {**TEST_ED25519_JWK, "x": "A" * 43}},
    ]
    with pytest.raises(SignatureError) as refused:
        RequestVerifier(wrong_keys).verify(*GATEWAY_REQUEST, headers, BODY, now_s=now)
    assert refused.value.reason == "bad_signature"
    with pytest.raises(SignatureError) as refused:
        RequestVerifier([{**HMAC_KEY, "keyid": "other"}]).verify(
            *GATEWAY_REQUEST, headers, BODY, now_s=now
        )
    assert refused.value.reason == "unknown_key"


# --- every refusal reason ------------------------------------------------------------------


def refuse(reason: str) -> SignatureError:
    """Makes the verifier refuse a request for `reason`; returns the exception."""
    verifier = both_verifier()
    headers = signed()
    method, authority, path, query = GATEWAY_REQUEST
    body = BODY
    now = NOW
    if reason == "missing_signature":
        headers = list(GATEWAY_HEADERS)
    elif reason == "malformed_signature":
        headers = [
            (n, 'cellgate=("@method";sf)' if n == "signature-input" else v) for n, v in headers
        ]
    elif reason == "unknown_key":
        verifier = RequestVerifier([{**HMAC_KEY, "keyid": "next"}])
    elif reason == "bad_signature":
        path = "/api/admin"
    elif reason == "stale_signature":
        now = NOW + 3600
    elif reason == "digest_mismatch":
        body = b'{"amount": 1000}'
    elif reason == "replayed":
        verifier.verify(method, authority, path, query, headers, body, now_s=now)
    elif reason == "missing_component":
        headers = [(n, v) for n, v in headers if n != "x-customer-id"]
    with pytest.raises(SignatureError) as refused:
        verifier.verify(method, authority, path, query, headers, body, now_s=now)
    return refused.value


@pytest.mark.parametrize(
    "reason",
    [
        "missing_signature",
        "malformed_signature",
        "unknown_key",
        "bad_signature",
        "stale_signature",
        "digest_mismatch",
        "replayed",
        "missing_component",
    ],
)
def test_every_reason_is_reachable(reason: str) -> None:
    error = refuse(reason)
    assert isinstance(error, ValueError)
    assert error.reason == reason
    assert error.detail
    assert str(error) == f"{reason}: {error.detail}"


def test_stale_future_and_expired() -> None:
    verifier = both_verifier()
    headers = signed()
    for now_s, word in [(NOW - 6, "future"), (NOW + 61, "expired")]:
        with pytest.raises(SignatureError) as refused:
            verifier.verify(*GATEWAY_REQUEST, headers, BODY, now_s=now_s)
        assert refused.value.reason == "stale_signature"
        assert word in refused.value.detail
    verifier.verify(*GATEWAY_REQUEST, headers, BODY, now_s=NOW + 60)


def test_a_required_component_that_is_not_covered() -> None:
    verifier = RequestVerifier([HMAC_KEY], required=["@method", "x-step-up"])
    with pytest.raises(SignatureError) as refused:
        verifier.verify(*GATEWAY_REQUEST, signed(), BODY, now_s=NOW)
    assert refused.value.reason == "missing_component"
    assert "x-step-up" in refused.value.detail


def test_keys_rotate() -> None:
    next_key = {**HMAC_KEY, "keyid": "next", "secret_b64": base64.b64encode(b"n" * 32).decode()}
    rotating = RequestVerifier([HMAC_KEY, next_key])
    for key in (HMAC_KEY, next_key):
        headers = signed(key, nonce=f"n-{key['keyid']}")
        assert rotating.verify(*GATEWAY_REQUEST, headers, BODY, now_s=NOW)["keyid"] == key["keyid"]


def test_garbage_never_crashes() -> None:
    verifier = RequestVerifier([HMAC_KEY], required=[])
    original = dict(signed())["signature-input"]
    for end in range(len(original)):
        headers = [(n, original[:end] if n == "signature-input" else v) for n, v in signed()]
        with pytest.raises(SignatureError):
            verifier.verify(*GATEWAY_REQUEST, headers, BODY, now_s=NOW)


# --- construction errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([HMAC_KEY, {**HMAC_KEY, "secret_b64": "c2hvcnQ"}], "keys[1].secret_b64: an hmac-sha256"),
        ([{**HMAC_KEY, "alg": "rsa-v1_5-sha256"}], 'keys[0].alg: "rsa-v1_5-sha256" is not'),
        ([{**HMAC_KEY, "spki_b64": TEST_ED25519_SPKI}], "keys[0].exactly one key form"),
        ([{**HMAC_KEY, "pem": "x"}], "keys[0]: unknown field `pem`"),
        (["not a dict"], "keys[0]: a key must be a dict"),
        ([HMAC_KEY, HMAC_KEY], "keys[1].keyid: duplicate keyid"),
        ([], "keys: at least one key is needed"),
    ],
)
def test_bad_keys_are_refused_with_their_path(keys: list, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        RequestVerifier(keys)
    assert message in str(refused.value)
    assert not isinstance(refused.value, SignatureError)


def test_bad_policy_and_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match=r"required\[0\]"):
        RequestVerifier([HMAC_KEY], required=["Not-Lowercase"])
    with pytest.raises(ValueError, match="label"):
        RequestVerifier([HMAC_KEY], label="Bad Label")
    with pytest.raises(ValueError, match="now_s"):
        both_verifier().verify(*GATEWAY_REQUEST, signed(), BODY, now_s=-1.0)
    with pytest.raises(TypeError, match="headers"):
        both_verifier().verify(*GATEWAY_REQUEST, [("only-a-name",)], BODY)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"key\.secret_b64"):
        sign_request({**HMAC_KEY, "secret_b64": "c2hvcnQ"}, *GATEWAY_REQUEST, [], b"", NOW, "n")
    with pytest.raises(ValueError, match="nonce"):
        sign_request(HMAC_KEY, *GATEWAY_REQUEST, [], b"", NOW, "new\nline")
    with pytest.raises(ValueError, match="absent"):
        sign_request(HMAC_KEY, *GATEWAY_REQUEST, [], b"", NOW, "n", components=["date"])
    with pytest.raises(ValueError, match="label"):
        sign_request(HMAC_KEY, *GATEWAY_REQUEST, [], b"", NOW, "n", label="Bad")


def test_verifier_properties() -> None:
    verifier = RequestVerifier([HMAC_KEY], label="cellgate", nonce_capacity=10)
    assert verifier.required == [
        "@method",
        "@authority",
        "@path",
        "@query",
        "content-digest",
        "x-request-id",
    ]
    assert (verifier.max_age_s, verifier.clock_skew_s, verifier.label) == (300, 5, "cellgate")
    verifier.verify(*GATEWAY_REQUEST, signed(), BODY, now_s=NOW)
    assert verifier.nonces_held == 1
    assert verifier.nonces_evicted == 0
