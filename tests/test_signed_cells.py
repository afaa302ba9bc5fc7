"""Signed cells, end to end: the demo hnw cell verifies the gateway's RFC 9421 signatures with
`cellgate.verify_request` and refuses, each with its reason, what an attacker between the
gateway and the cell could send: a tampered body, header, path or query, a stale or expired
signature, a replayed nonce, an unknown key, a missing component. An independent
implementation (pyauth's http-message-signatures) accepts what the gateway signs.

The hnw cell is also an mTLS cell: the attacker here is one who holds the gateway's client
certificate (stolen, or inside the gateway's network identity), so the signature is all that
stands between it and the cell."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

import http_message_signatures as hms
import pytest
from cellgate import sign_request
from cellgate.demo.launch import _topology, demo_tls, demo_token, demo_verify_keys
from cellgate.signing_keys import SIGNED_COMPONENTS
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from harness import Gateway, http_json, tls_client
from http_message_signatures import algorithms

SIGNED_CELL = "hnw-us-east-1"
BODY = b'{"from": "acc-1", "to": "acc-2", "amount": "125.00"}'


def demo_signing_key() -> dict:
    """The gateway's signing key for the signed demo cell, as `sign_request` takes it."""
    (cell,) = [c for c in _topology()["cells"] if c["id"] == SIGNED_CELL]
    return {"keyid": cell["signing"]["keyid"], "alg": "ed25519", "jwk": cell["signing"]["jwk"]}


def through_gateway(gateway: Gateway, method: str = "POST", body: bytes | None = BODY) -> dict:
    """What the signed cell received from the gateway for one request (its echo)."""
    headers = {
        "Authorization": f"Bearer {demo_token('c-hnw-us')}",
        "Content-Type": "application/json",
    }
    status, _, echo = http_json(gateway.port, method, "/api/transfers?dry=1", headers, body)
    assert status == 200, echo
    assert echo["cell"] == SIGNED_CELL
    return echo


def to_cell(
    demo_cells_running, method: str, target: str, headers: dict, body: bytes | None
) -> tuple[int, dict]:
    """Sends a request straight to the signed cell, as an attacker past the gateway would (with
    the gateway's client certificate, which the cell's mTLS requires)."""
    port = demo_cells_running.ports[SIGNED_CELL]
    tls = demo_tls(demo_cells_running.directory)
    client = tls_client(tls.ca_file, tls.gateway_cert_file, tls.gateway_key_file)
    status, _, payload = http_json(port, method, target, headers, body, tls=client)
    return status, payload


def replayable(echo: dict) -> dict:
    """The headers the gateway sent, less those the HTTP client sets itself."""
    return {k: v for k, v in echo["headers"].items() if k not in ("content-length", "host")}


def test_the_signed_cell_accepts_what_the_gateway_signs(gateway: Gateway):
    echo = through_gateway(gateway)
    signature = echo["signature"]
    assert signature["keyid"] == "demo-hnw-2026"
    assert signature["alg"] == "ed25519"
    for component in (
        *SIGNED_COMPONENTS,
        *("content-digest", "x-risk-level", "traceparent", "content-type"),
    ):
        assert component in signature["covered"], component
    sent = echo["headers"]
    assert sent["content-digest"].startswith("sha-256=:")
    assert "authorization" not in sent, "a signed cell needs no bearer token"
    bodyless = through_gateway(gateway, "GET", None)
    assert "content-digest" not in bodyless["signature"]["covered"]


@dataclass
class Message:
    """A request as http-message-signatures reads it."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def test_an_independent_implementation_accepts_what_the_gateway_signs(
    gateway: Gateway, demo_cells_running
):
    echo = through_gateway(gateway)
    jwk = demo_verify_keys()[SIGNED_CELL]["jwk"]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "="))
    resolver = hms.MappingKeyResolver(public_keys={"demo-hnw-2026": public}, private_keys={})
    verifier = hms.HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519, key_resolver=resolver
    )
    port = demo_cells_running.ports[SIGNED_CELL]
    url = f"https://127.0.0.1:{port}{echo['raw_path']}?{echo['query']}"
    message = Message("POST", url, dict(echo["headers"]))
    (result,) = verifier.verify(
        message,
        require_components=("@method", "@authority", "@path", "@query", "x-customer-id"),
        body=BODY,
    )
    assert result.parameters["keyid"] == "demo-hnw-2026"
    assert result.nonce == echo["headers"]["x-request-id"]
    message.headers["x-customer-id"] = "c-someone-else"
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(message, body=BODY)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda r: r.update(body=b'{"amount": "999999.00"}'), "digest_mismatch"),
        (lambda r: r["headers"].update({"x-customer-id": "c-corp-us"}), "bad_signature"),
        (lambda r: r["headers"].update({"x-step-up": "true"}), "bad_signature"),
        (lambda r: r.update(target="/api/transfers/other?dry=1"), "bad_signature"),
        (lambda r: r.update(target="/api/transfers?dry=0"), "bad_signature"),
        (lambda r: r.update(method="PUT"), "bad_signature"),
        (lambda r: r["headers"].pop("x-customer-id"), "missing_component"),
        (lambda r: r["headers"].pop("signature"), "missing_signature"),
        (
            lambda r: r["headers"].update({"signature-input": "cellgate=(junk"}),
            "malformed_signature",
        ),
        (lambda r: None, "replayed"),
    ],
    ids=[
        "body",
        "identity header",
        "step-up header",
        "path",
        "query",
        "method",
        "dropped header",
        "no signature",
        "malformed",
        "replayed as is",
    ],
)
def test_what_an_attacker_past_the_gateway_sends_is_refused(
    gateway: Gateway, demo_cells_running, tamper, reason: str
):
    echo = through_gateway(gateway)
    request = {
        "method": "POST",
        "target": "/api/transfers?dry=1",
        "headers": replayable(echo),
        "body": BODY,
    }
    tamper(request)
    status, refusal = to_cell(demo_cells_running, **request)
    assert status == 401, refusal
    assert refusal["error"] == "signature_refused"
    assert refusal["reason"] == reason, refusal


def signed_directly(demo_cells_running, *, key: dict, now_s: float, **options) -> dict:
    """Headers for a request to the signed cell signed with `key` at `now_s`."""
    port = demo_cells_running.ports[SIGNED_CELL]
    headers = {
        "x-request-id": f"attacker-{time.monotonic_ns()}",
        "x-cell-id": SIGNED_CELL,
        "x-customer-id": "c-hnw-us",
        "x-customer-tier": "hnw",
        "x-step-up": "true",
    }
    added = sign_request(
        key,
        "POST",
        f"127.0.0.1:{port}",
        "/api/transfers",
        "",
        list(headers.items()),
        BODY,
        now_s,
        headers["x-request-id"],
        **options,
    )
    return {**headers, **dict(added)}


@pytest.mark.parametrize(
    ("age_s", "options", "reason"),
    [
        (1000, {}, "stale_signature"),
        (-120, {}, "stale_signature"),
        (30, {"ttl_s": 10}, "stale_signature"),
        (0, {"components": ["@method"]}, "missing_component"),
    ],
    ids=["too old", "from the future", "expired", "too little covered"],
)
def test_stale_expired_and_thin_signatures_are_refused(
    demo_cells_running, age_s: int, options: dict, reason: str
):
    headers = signed_directly(
        demo_cells_running, key=demo_signing_key(), now_s=time.time() - age_s, **options
    )
    status, refusal = to_cell(demo_cells_running, "POST", "/api/transfers", headers, BODY)
    assert (status, refusal["reason"]) == (401, reason), refusal
    fresh = signed_directly(demo_cells_running, key=demo_signing_key(), now_s=time.time())
    status, echo = to_cell(demo_cells_running, "POST", "/api/transfers", fresh, BODY)
    assert status == 200, echo


def test_a_key_the_cell_does_not_know_is_refused(demo_cells_running):
    stranger = {"keyid": "stolen", "alg": "hmac-sha256", "secret_b64": "c2VjcmV0" * 8}
    headers = signed_directly(demo_cells_running, key=stranger, now_s=time.time())
    status, refusal = to_cell(demo_cells_running, "POST", "/api/transfers", headers, BODY)
    assert (status, refusal["reason"]) == (401, "unknown_key"), refusal
    # The cell's own keyid, but an HMAC key: the algorithm the key is bound to decides.
    impostor = {"keyid": "demo-hnw-2026", "alg": "hmac-sha256", "secret_b64": "c2VjcmV0" * 8}
    headers = signed_directly(demo_cells_running, key=impostor, now_s=time.time())
    status, refusal = to_cell(demo_cells_running, "POST", "/api/transfers", headers, BODY)
    assert status == 401
    assert refusal["reason"] in ("malformed_signature", "bad_signature"), refusal
