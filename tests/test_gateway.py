"""End to end: a real `cellgate serve` process forwarding to real demo cells on loopback."""

from __future__ import annotations

import hashlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cellgate.demo.launch import demo_admin_token, demo_customers, demo_token
from harness import Gateway, http_json

CELL_TIERS = {
    "retail-us-east-1": ("retail", "us-east"),
    "retail-us-east-2": ("retail", "us-east"),
    "corp-us-east-1": ("corporate", "us-east"),
    "hnw-us-east-1": ("hnw", "us-east"),
    "retail-eu-west-1": ("retail", "eu-west"),
    "corp-eu-west-1": ("corporate", "eu-west"),
    "hnw-ap-southeast-1": ("hnw", "ap-southeast"),
}


def bearer(customer_id: str, **claims) -> dict:
    return {"Authorization": f"Bearer {demo_token(customer_id, **claims)}"}


def control(cells, cell_id: str, action: str) -> None:
    status, _, _ = http_json(cells.ports[cell_id], "POST", f"/_cell/{action}")
    assert status == 200


def wait_for(predicate, timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def all_idle(gateway: Gateway) -> bool:
    return all(cell["in_flight"] == 0 for cell in gateway.cells())


@pytest.mark.parametrize("customer", demo_customers(), ids=lambda c: c["customer_id"])
def test_every_demo_customer_lands_on_a_cell_of_its_tier_and_region(
    gateway: Gateway, customer: dict
):
    status, headers, echo = http_json(
        gateway.port, "GET", "/api/accounts?page=2", bearer(customer["customer_id"])
    )
    assert status == 200, echo
    if "HIGH_RISK" in customer["flags"]:
        # No cell of its tier has maximum encryption: the region's fallback that has it serves.
        assert echo["cell"] == "hnw-us-east-1"
    else:
        assert CELL_TIERS[echo["cell"]] == (customer["tier"], customer["region"])
    sent = echo["headers"]
    assert sent["x-cell-id"] == echo["cell"]
    assert sent["x-encryption-level"] in ("standard", "enhanced", "maximum")
    assert sent["x-request-id"] == headers["x-request-id"]
    assert len(headers["x-request-id"]) == 32
    assert echo["path"] == "/api/accounts"
    assert echo["query"] == "page=2"


def test_routing_headers_cannot_be_spoofed_and_hop_by_hop_headers_are_dropped(gateway: Gateway):
    headers = {
        **bearer("c-corp-us"),
        "X-Cell-ID": "hnw-us-east-1",
        "X-Encryption-Level": "maximum",
        "X-Request-ID": "chosen-by-client",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "secret",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Custom": "kept",
    }
    status, _, echo = http_json(gateway.port, "GET", "/api/positions", headers)
    assert status == 200
    sent = echo["headers"]
    assert echo["cell"] == "corp-us-east-1"
    assert sent["x-cell-id"] == "corp-us-east-1"
    assert sent["x-encryption-level"] == "enhanced"
    assert sent["x-request-id"] != "chosen-by-client"
    for dropped in ("x-hop", "te", "proxy-authorization"):
        assert dropped not in sent
    assert sent["x-custom"] == "kept"
    assert sent["x-forwarded-for"] == "127.0.0.1"


def test_a_body_reaches_the_cell_intact(gateway: Gateway):
    body = b'{"from": "acc-1", "to": "acc-2", "amount": "125.00"}' * 50
    headers = {
        **bearer("c-hnw-us"),
        "Content-Type": "application/json",
        "Idempotency-Key": "t-body-1",
    }
    status, _, echo = http_json(gateway.port, "POST", "/api/transfers", headers, body)
    assert status == 200
    assert echo["cell"] == "hnw-us-east-1"
    assert echo["method"] == "POST"
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_a_chunked_body_reaches_the_cell_intact(gateway: Gateway):
    # No Content-Length: the body is framed by Transfer-Encoding alone and must still be read.
    parts = [b'{"from": "acc-1", ', b'"to": "acc-2", ', b'"amount": "7.00"}']
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    token = bearer("c-hnw-us")["Authorization"]
    head = (
        "POST /api/transfers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
        conn.sendall(head.encode() + chunked)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    body = b"".join(parts)
    assert f'"body_bytes":{len(body)}'.encode() in reply.replace(b" ", b"")
    assert hashlib.sha256(body).hexdigest().encode() in reply


def test_a_body_over_the_limit_is_refused_with_413(gateway: Gateway):
    headers = {**bearer("c-retail-us"), "Content-Length": str(2 << 20)}
    conn = socket.create_connection(("127.0.0.1", gateway.port))
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        conn.sendall(f"POST /api/transfers HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
        reply = conn.recv(65536).decode()
    finally:
        conn.close()
    assert reply.startswith("HTTP/1.1 413")
    assert '"reason":"body_too_large"' in reply
    wait_for(lambda: all_idle(gateway), what="slots to be released")


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "missing_token"),
        ({"Authorization": "Bearer not.a.token"}, 401, "malformed"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401, "malformed"),
        ("expired", 401, "expired"),
        ("unknown", 404, "customer_not_found"),
    ],
)
def test_refusals_are_problem_json_with_reason_and_request_id(
    gateway: Gateway, headers, status, reason
):
    if headers == "expired":
        headers = bearer("c-retail-us", exp=int(time.time()) - 3600)
    elif headers == "unknown":
        headers = bearer("c-nobody")
    got_status, got_headers, problem = http_json(gateway.port, "GET", "/api/accounts", headers)
    assert got_status == status
    assert got_headers["content-type"] == "application/problem+json"
    assert problem["reason"] == reason
    assert problem["status"] == status
    assert problem["request_id"] == got_headers["x-request-id"]
    assert problem["type"] == f"urn:cellgate:problem:{reason}"
    if status == 401:
        assert got_headers["www-authenticate"].startswith("Bearer")


def test_admin_routes_need_an_admin_token(gateway: Gateway):
    status, _, problem = http_json(gateway.port, "GET", "/_cellgate/cells")
    assert (status, problem["reason"]) == (401, "admin_token_required")
    customer_token = bearer("c-retail-us")
    status, _, problem = http_json(gateway.port, "GET", "/_cellgate/cells", customer_token)
    assert (status, problem["reason"]) == (401, "admin_token_invalid")
    assert {cell["id"] for cell in gateway.cells()} == set(CELL_TIERS)


def test_revoked_tokens_are_refused_until_the_revocation_is_lifted(gateway: Gateway):
    admin = {"Authorization": f"Bearer {demo_admin_token()}", "Content-Type": "application/json"}
    by_jti = bearer("c-corp-us", jti="tok-revoke-me")
    assert http_json(gateway.port, "GET", "/api/accounts", by_jti)[0] == 200  # now cached
    body = b'{"jti": "tok-revoke-me", "forget_after_s": 4102444800}'
    status, _, counts = http_json(gateway.port, "POST", "/_cellgate/revocations", admin, body)
    assert (status, counts["tokens"]) == (200, 1)
    status, _, problem = http_json(gateway.port, "GET", "/api/accounts", by_jti)
    assert (status, problem["reason"]) == (401, "token_revoked")
    assert http_json(gateway.port, "GET", "/api/accounts", bearer("c-corp-us"))[0] == 200

    old = bearer("c-corp-eu", iat=int(time.time()) - 60)
    cut_off = f'{{"customer_id": "c-corp-eu", "issued_before_s": {time.time() - 30}}}'.encode()
    assert http_json(gateway.port, "POST", "/_cellgate/revocations", admin, cut_off)[0] == 200
    assert http_json(gateway.port, "GET", "/api/accounts", old)[2]["reason"] == "token_revoked"
    assert http_json(gateway.port, "GET", "/api/accounts", bearer("c-corp-eu"))[0] == 200
    path = "/_cellgate/revocations/customers/c-corp-eu"
    assert http_json(gateway.port, "DELETE", path, admin)[2] == {
        "customer_id": "c-corp-eu",
        "lifted": True,
        "scope": "worker",
        "lasting": True,
    }
    assert http_json(gateway.port, "GET", "/api/accounts", old)[0] == 200

    for bad in (b"{", b'{"jti": "x"}', b'{"jti": "x", "customer_id": "y"}', b'{"who": 1}'):
        status, _, problem = http_json(gateway.port, "POST", "/_cellgate/revocations", admin, bad)
        assert (status, problem["reason"]) == (400, "bad_revocation"), bad


def _abandon(port: int, request: bytes) -> None:
    """Sends a request and hangs up without reading the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(request)
    time.sleep(0.05)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def test_in_flight_returns_to_zero_after_clients_disconnect_mid_request(
    gateway: Gateway, demo_cells_running
):
    token = demo_token("c-retail-eu")
    control(demo_cells_running, "retail-eu-west-1", "slow?ms=400")
    try:
        get = (
            f"GET /api/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        half_post = (
            f"POST /api/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            'Content-Length: 1000\r\n\r\n{"partial":'
        ).encode()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda r: _abandon(gateway.port, r), [get] * 20 + [half_post] * 10))
            held = max(
                cell["in_flight"] for cell in gateway.cells() if cell["id"] == "retail-eu-west-1"
            )
            # While the cell is slow, abandoned requests still hold their slots.
            assert held > 0
            ok = list(
                pool.map(
                    lambda _: http_json(
                        gateway.port, "GET", "/api/x", {"Authorization": f"Bearer {token}"}
                    )[0],
                    range(8),
                )
            )
        assert ok == [200] * 8
    finally:
        control(demo_cells_running, "retail-eu-west-1", "reset")
    wait_for(
        lambda: all_idle(gateway), timeout_s=10, what="every cell's in-flight count to return to 0"
    )


def test_a_dead_cell_is_taken_out_and_its_peer_serves(gateway: Gateway, demo_cells_running):
    control(demo_cells_running, "retail-us-east-1", "unhealthy")
    try:
        wait_for(
            lambda: (
                not next(c for c in gateway.cells() if c["id"] == "retail-us-east-1")["healthy"]
            ),
            what="the health checker to mark the cell down",
        )
        landed = {
            http_json(gateway.port, "GET", "/api/a", bearer("c-retail-us"))[2]["cell"]
            for _ in range(10)
        }
        assert landed == {"retail-us-east-2"}
    finally:
        control(demo_cells_running, "retail-us-east-1", "reset")
    wait_for(
        lambda: next(c for c in gateway.cells() if c["id"] == "retail-us-east-1")["healthy"],
        what="the cell to come back after rise checks",
    )


def test_no_eligible_cell_is_503_with_the_explanation(gateway: Gateway, demo_cells_running):
    control(demo_cells_running, "hnw-ap-southeast-1", "unhealthy")
    try:
        wait_for(
            lambda: http_json(gateway.port, "GET", "/api/a", bearer("c-hnw-ap"))[0] == 503,
            what="503 once the only hnw ap-southeast cell is down",
        )
        _, _, problem = http_json(gateway.port, "GET", "/api/a", bearer("c-hnw-ap"))
        assert problem["reason"] == "no_eligible_cell"
        assert "hnw-ap-southeast-1: unhealthy" in problem["detail"]
    finally:
        control(demo_cells_running, "hnw-ap-southeast-1", "reset")


def test_a_cell_failing_mid_flight_is_a_502_problem(gateway: Gateway, demo_cells_running):
    control(demo_cells_running, "corp-eu-west-1", "fail?status=500")
    try:
        status, _, echo = http_json(gateway.port, "GET", "/api/a", bearer("c-corp-eu"))
        # The cell's own error answer is passed through unchanged.
        assert status == 500
        assert echo["cell"] == "corp-eu-west-1"
    finally:
        control(demo_cells_running, "corp-eu-west-1", "reset")


def test_sigterm_shuts_down_cleanly(demo_config):
    from harness import start_gateway

    gw = start_gateway(demo_config)
    assert http_json(gw.port, "GET", "/api/a", bearer("c-retail-us"))[0] == 200
    assert gw.stop() == 0
