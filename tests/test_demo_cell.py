"""The demo cell: a real `python -m cellgate.demo.cell` process (granian, embedded) spoken to over
loopback sockets. HTTP/1.1 itself (framing, keep-alive, pipelining, malformed requests) is
granian's; what is checked of it here is what the gateway's tests rely on."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cellgate.demo.cell import Ledger, serve
from harness import free_port

pytestmark = pytest.mark.timeout(30)

READY_TIMEOUT_S = 10.0


@dataclass
class CellProcess:
    """A running demo cell process."""

    cell_id: str
    port: int
    process: subprocess.Popen
    ready_line: str

    def request(
        self, method: str, path: str, headers: dict | None = None, body: bytes | None = None
    ) -> tuple[int, dict[str, str], dict]:
        """One request over a fresh connection: (status, lower-cased headers, decoded JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            payload = json.loads(response.read())
            return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        finally:
            conn.close()

    def control(self, action: str) -> dict:
        """POSTs ``/_cell/<action>`` and returns its JSON answer, which must be a 200."""
        status, _, payload = self.request("POST", f"/_cell/{action}")
        assert status == 200, payload
        return payload

    def stats(self) -> dict:
        """The cell's ``/_cell/stats``."""
        status, _, payload = self.request("GET", "/_cell/stats")
        assert status == 200
        return payload

    def connect(self) -> socket.socket:
        """A raw socket connected to the cell."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


def start_cell_process(cell_id: str, port: int) -> subprocess.Popen:
    """Starts a demo cell process with its stdout piped."""
    command = [sys.executable, "-m", "cellgate.demo.cell", "--id", cell_id]
    return subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_ready_line(process: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> str:
    """The cell's first stdout line, failing the test if it takes longer than ``timeout_s``."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not readable:
        raise AssertionError(f"no ready line within {timeout_s} s")
    return process.stdout.readline()


def stop_process(process: subprocess.Popen) -> None:
    """Kills ``process`` if it still runs and closes its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def cell() -> Iterator[CellProcess]:
    """A fresh demo cell process on a free loopback port, killed after the test."""
    port = free_port()
    process = start_cell_process("retail-us-east-1", port)
    try:
        line = read_ready_line(process)
        yield CellProcess("retail-us-east-1", port, process, line)
    finally:
        stop_process(process)


def read_response(stream) -> tuple[int, dict[str, str], bytes]:
    """Reads one Content-Length framed response off a socket's binary file."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, stream.read(int(headers["content-length"]))


def read_all_until_close(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Polls ``predicate`` until it holds, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------- start-up and routes


def test_ready_line_names_the_cell_and_its_url(cell: CellProcess):
    assert cell.ready_line == f"cell retail-us-east-1 listening on http://127.0.0.1:{cell.port}\n"


def test_api_requests_are_echoed_with_headers_query_and_body_digest(cell: CellProcess):
    body = b'{"amount": "10.00"}' * 7
    status, headers, echo = cell.request(
        "PUT",
        "/api/accounts/acc-7?page=2&sort=desc",
        {"X-Cell-ID": "retail-us-east-1", "X-Request-ID": "r-1", "X-Twice": "a"},
        body,
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["x-served-by"] == "retail-us-east-1"
    assert int(headers["content-length"]) > 0
    assert echo["cell"] == "retail-us-east-1"
    assert echo["method"] == "PUT"
    assert echo["path"] == "/api/accounts/acc-7"
    assert echo["query"] == "page=2&sort=desc"
    assert echo["headers"]["x-cell-id"] == "retail-us-east-1"
    assert echo["headers"]["x-request-id"] == "r-1"
    assert echo["headers"]["content-length"] == str(len(body))
    assert echo["headers"]["host"] == f"127.0.0.1:{cell.port}"
    assert echo["body_bytes"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert "applied" not in echo


def test_repeated_headers_are_joined_in_the_echo(cell: CellProcess):
    with cell.connect() as sock:
        sock.sendall(
            b"GET /api/x HTTP/1.1\r\nHost: h\r\nX-Tag: a\r\nx-tag: b\r\nConnection: close\r\n\r\n"
        )
        _, _, body = read_response(sock.makefile("rb"))
    assert json.loads(body)["headers"]["x-tag"] == "a, b"


def test_health_and_unknown_routes(cell: CellProcess):
    assert cell.request("GET", "/health")[::2] == (200, {"cell": cell.cell_id, "status": "ok"})
    status, headers, payload = cell.request("GET", "/nope")
    assert (status, payload["error"], headers["x-served-by"]) == (404, "not_found", cell.cell_id)
    status, headers, payload = cell.request("GET", "/_cell/fail")
    assert (status, headers["allow"], payload["error"]) == (405, "POST", "method_not_allowed")


# ---------------------------------------------------------------- connections and framing


def test_keep_alive_serves_many_requests_on_one_connection(cell: CellProcess):
    conn = http.client.HTTPConnection("127.0.0.1", cell.port, timeout=10)
    try:
        conn.connect()
        local_address = conn.sock.getsockname()
        for i in range(25):
            body = os.urandom(i * 100) if i % 2 else None
            conn.request("POST" if body else "GET", f"/api/n/{i}", body=body)
            response = conn.getresponse()
            echo = json.loads(response.read())
            assert response.status == 200
            assert response.getheader("connection") is None
            assert echo["path"] == f"/api/n/{i}"
            assert echo["body_bytes"] == (len(body) if body else 0)
            assert conn.sock.getsockname() == local_address, "the client had to reconnect"
    finally:
        conn.close()
    assert cell.stats()["requests"] == 25


def test_pipelined_requests_on_a_raw_socket_are_answered_in_order(cell: CellProcess):
    requests = (
        b"GET /api/one?a=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"HEAD /health HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /api/two HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /api/three HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    with cell.connect() as sock:
        sock.sendall(requests)
        stream = sock.makefile("rb")
        one = read_response(stream)
        head_status, head_headers = read_response_head(stream)
        two = read_response(stream)
        three = read_response(stream)
        assert stream.read() == b"", "the connection stays open after Connection: close"
        stream.close()
    assert [json.loads(r[2])["path"] for r in (one, two, three)] == [
        "/api/one",
        "/api/two",
        "/api/three",
    ]
    assert json.loads(one[2])["query"] == "a=1"
    assert json.loads(two[2])["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert (head_status, int(head_headers["content-length"])) == (
        200,
        len(b'{"cell":"retail-us-east-1","status":"ok"}'),
    )
    assert three[1]["connection"] == "close"


def read_response_head(stream) -> tuple[int, dict[str, str]]:
    """Reads a response to HEAD: status line and headers, no body whatever Content-Length says."""
    status_line = stream.readline()
    headers = {}
    while (line := stream.readline()) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def test_http_1_0_closes_unless_asked_to_keep_alive(cell: CellProcess):
    with cell.connect() as sock:
        sock.sendall(b"GET /api/old HTTP/1.0\r\n\r\n")
        reply = read_all_until_close(sock)
    assert reply.split(b" ", 2)[1] == b"200", reply[:80]
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["path"] == "/api/old"


def test_chunked_request_body_is_reassembled(cell: CellProcess):
    chunks = [b"first-", b"second-" * 300, b"x"]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    with cell.connect() as sock:
        sock.sendall(
            b"POST /api/upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + encoded[:10]
        )
        time.sleep(0.05)  # the body arrives in pieces
        sock.sendall(encoded[10:] + b"0;ext=1\r\nX-Trailer: t\r\n\r\n")
        stream = sock.makefile("rb")
        status, _, body = read_response(stream)
        stream.close()
    echo = json.loads(body)
    assert status == 200
    assert echo["body_bytes"] == sum(map(len, chunks))
    assert echo["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert echo["headers"]["transfer-encoding"] == "chunked"


def test_expect_100_continue_is_answered_before_the_body(cell: CellProcess):
    with cell.connect() as sock:
        sock.sendall(
            b"POST /api/big HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        stream = sock.makefile("rb")
        status, _, body = read_response(stream)
        stream.close()
    assert (status, json.loads(body)["body_bytes"]) == (200, 4)


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/x HTTP/1.1 extra\r\n\r\n",
        b"GET /api/x HTTP/2.0\r\n\r\n",
        b"GET api/x HTTP/1.1\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nBad Name: v\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        b"POST /api/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    ],
    ids=[
        "no-request-line",
        "four-part-request-line",
        "http-2",
        "relative-target",
        "header-without-colon",
        "space-in-header-name",
        "obsolete-folding",
        "content-length-not-a-number",
        "conflicting-content-lengths",
        "unsupported-transfer-coding",
    ],
)
def test_malformed_requests_are_refused_by_granian_and_the_connection_closed(
    cell: CellProcess, raw: bytes
):
    with cell.connect() as sock:
        sock.sendall(raw)
        reply = read_all_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 4"), reply[:80]
    assert cell.request("GET", "/health")[0] == 200, "a bad request must not hurt the cell"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /api/x HTTP/1.1\r\nContent-Length: 9437184\r\n\r\n", 413),
        (b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /api/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400),
        (b"GET /api/x HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
    ids=[
        "content-length-over-8-mib",
        "chunk-size-not-hex",
        "chunk-without-crlf",
        "head-over-64-kib",
    ],
)
def test_what_the_cell_limits_itself_is_refused_by_the_cell(
    cell: CellProcess, raw: bytes, status: int
):
    with cell.connect() as sock:
        sock.sendall(raw)
        reply = read_all_until_close(sock)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:80]
    assert b"connection: close\r\n" in reply
    assert b"x-served-by: retail-us-east-1\r\n" in reply
    assert cell.request("GET", "/health")[0] == 200, "a bad request must not hurt the cell"


# ---------------------------------------------------------------- failure injection


def test_fail_answers_the_injected_status_until_reset(cell: CellProcess):
    assert cell.control("fail?status=503")["mode"]["fail_status"] == 503
    status, headers, payload = cell.request("GET", "/api/accounts")
    assert (status, payload) == (503, {"cell": cell.cell_id, "error": "injected"})
    assert headers["x-served-by"] == cell.cell_id
    assert cell.request("GET", "/health")[0] == 200, "fail touches /api only"
    cell.control("reset")
    assert cell.request("GET", "/api/accounts")[0] == 200
    assert cell.stats()["requests"] == 2


def test_fail_defaults_to_500_and_refuses_a_bad_status(cell: CellProcess):
    cell.control("fail")
    assert cell.request("GET", "/api/x")[0] == 500
    assert cell.request("POST", "/_cell/fail?status=abc")[0] == 400
    assert cell.request("POST", "/_cell/slow")[0] == 400


def test_unhealthy_makes_health_503_until_reset(cell: CellProcess):
    cell.control("unhealthy")
    assert cell.request("GET", "/health")[::2] == (503, {"cell": cell.cell_id, "status": "failing"})
    assert cell.request("GET", "/api/x")[0] == 200, "unhealthy touches /health only"
    cell.control("reset")
    assert cell.request("GET", "/health")[0] == 200


def test_slow_delays_api_answers_without_blocking_the_cell(cell: CellProcess):
    assert cell.control("slow?ms=400")["mode"]["slow_ms"] == 400
    with cell.connect() as slow_sock:
        started = time.monotonic()
        slow_sock.sendall(b"GET /api/slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        wait_for(lambda: cell.stats()["in_flight"] == 1, "the slow request to be in flight")
        health_started = time.monotonic()
        assert cell.request("GET", "/health")[0] == 200
        assert time.monotonic() - health_started < 0.2, "a slow answer blocked the cell"
        reply = read_all_until_close(slow_sock)
        assert time.monotonic() - started >= 0.4
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert cell.stats()["in_flight"] == 0
    cell.control("reset")
    started = time.monotonic()
    cell.request("GET", "/api/fast")
    assert time.monotonic() - started < 0.2


def test_hanging_request_is_in_flight_until_its_client_disconnects(cell: CellProcess):
    assert cell.control("hang")["mode"]["hang"] is True
    sock = cell.connect()
    try:
        sock.sendall(b"GET /api/stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: cell.stats()["in_flight"] == 1, "the hanging request to be in flight")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
    finally:
        sock.close()
    wait_for(
        lambda: cell.stats()["in_flight"] == 0, "in_flight to return to 0 after the disconnect"
    )
    assert cell.stats()["requests"] == 1


def test_reset_releases_hanging_requests(cell: CellProcess):
    cell.control("hang")
    with cell.connect() as sock:
        sock.sendall(b"GET /api/stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: cell.stats()["in_flight"] == 1, "the hanging request to be in flight")
        assert cell.control("reset")["mode"] == {
            "fail_status": None,
            "unhealthy": False,
            "slow_ms": 0,
            "hang": False,
        }
        stream = sock.makefile("rb")
        status, _, body = read_response(stream)
        stream.close()
    assert (status, json.loads(body)["path"]) == (200, "/api/stuck")
    assert cell.stats()["in_flight"] == 0


def test_die_answers_then_the_process_exits_hard(cell: CellProcess):
    status, _, payload = cell.request("POST", "/_cell/die")
    assert (status, payload) == (200, {"cell": cell.cell_id, "dying": True})
    assert cell.process.wait(timeout=5) == 1
    with pytest.raises(ConnectionRefusedError):
        cell.connect().close()


def test_sigterm_stops_the_cell_cleanly_even_with_a_request_hanging(cell: CellProcess):
    cell.control("hang")
    with cell.connect() as sock:
        sock.sendall(b"GET /api/stuck HTTP/1.1\r\nHost: h\r\n\r\n")
        wait_for(lambda: cell.stats()["in_flight"] == 1, "the hanging request to be in flight")
        cell.process.send_signal(signal.SIGTERM)
        assert cell.process.wait(timeout=5) == 0
        reply = read_all_until_close(sock)
        # Answered as the cell stops, rather than left hanging.
        assert reply.startswith(b"HTTP/1.1 503 "), reply[:80]
    assert cell.process.stderr is not None
    assert cell.process.stderr.read() == ""


def test_sigint_stops_the_cell_cleanly(cell: CellProcess):
    cell.process.send_signal(signal.SIGINT)
    assert cell.process.wait(timeout=5) == 0


# ---------------------------------------------------------------- transfer ledger


def test_ledger_applies_each_idempotency_key_once(cell: CellProcess):
    def transfer(path: str, key: str | None) -> dict:
        headers = {"Idempotency-Key": key} if key else {}
        status, _, echo = cell.request("POST", path, headers, b'{"amount": "1.00"}')
        assert status == 200
        return echo

    first = transfer("/api/transfers", "k-1")
    again = transfer("/api/transfers", "k-1")
    other = transfer("/api/transfers/intl", "k-2")
    unkeyed = [transfer("/api/transfers", None) for _ in range(2)]
    assert (first["applied"], "replayed" in first) == (True, False)
    assert (again["applied"], again["replayed"]) == (False, True)
    assert other["applied"] is True
    assert all(echo["applied"] is True for echo in unkeyed)
    assert "applied" not in cell.request("GET", "/api/transfers", {"Idempotency-Key": "k-3"})[2]
    assert "applied" not in transfer("/api/transfers-report", "k-4")
    status, _, ledger = cell.request("GET", "/_cell/ledger")
    assert status == 200
    assert ledger == {"applied": 4, "keys": {"k-1": 2, "k-2": 1}}


def test_a_transfer_taken_by_a_hanging_cell_is_applied_once_across_a_retry(cell: CellProcess):
    cell.control("hang")
    with cell.connect() as sock:
        sock.sendall(
            b"POST /api/transfers HTTP/1.1\r\nHost: h\r\nIdempotency-Key: k-h\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        wait_for(lambda: cell.stats()["in_flight"] == 1, "the transfer to be in flight")
    cell.control("reset")
    status, _, echo = cell.request("POST", "/api/transfers", {"Idempotency-Key": "k-h"}, b"{}")
    assert (status, echo["applied"], echo["replayed"]) == (200, False, True)
    assert cell.request("GET", "/_cell/ledger")[2] == {"applied": 1, "keys": {"k-h": 2}}


def test_a_repeated_key_gets_the_first_answer_another_body_422_and_one_in_flight_409(
    cell: CellProcess,
):
    body = b'{"amount": "5.00"}'
    first = cell.request("POST", "/api/transfers", {"Idempotency-Key": "k-r"}, body)
    again = cell.request("POST", "/api/transfers", {"Idempotency-Key": "k-r"}, body)
    assert first[0] == again[0] == 200
    assert again[2]["replayed"] is True and again[2]["applied"] is False
    assert again[2]["headers"] == first[2]["headers"], "the first answer, not a new one"
    status, _, reused = cell.request(
        "POST", "/api/transfers", {"Idempotency-Key": "k-r"}, b'{"amount": "500.00"}'
    )
    assert (status, reused["error"]) == (422, "idempotency_key_reused")
    cell.control("slow?ms=800")
    with cell.connect() as sock:
        sock.sendall(
            b"POST /api/transfers HTTP/1.1\r\nHost: h\r\nIdempotency-Key: k-f\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        wait_for(lambda: cell.stats()["in_flight"] == 1, "the transfer to be in flight")
        status, _, busy = cell.request("POST", "/api/transfers", {"Idempotency-Key": "k-f"}, b"{}")
        assert (status, busy["error"]) == (409, "idempotency_key_in_flight")
    cell.control("reset")
    ledger = cell.request("GET", "/_cell/ledger")[2]
    assert ledger["applied"] == 2 and ledger["keys"] == {"k-r": 3, "k-f": 2}


# ---------------------------------------------------------------- command line and embedding


def test_a_port_already_taken_exits_1_with_a_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = start_cell_process("c", taken.getsockname()[1])
        try:
            assert process.wait(timeout=10) == 1
            assert process.stderr is not None
            assert "cannot listen" in process.stderr.read()
        finally:
            stop_process(process)


def test_serve_can_be_embedded_in_a_running_loop(capsys: pytest.CaptureFixture[str]):
    async def scenario() -> dict:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve("embedded-1", "127.0.0.1", 0, ready=ready, stop=stop))
        await asyncio.wait_for(ready.wait(), 5)
        port = int(capsys.readouterr().out.strip().rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/e HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        stop.set()
        await asyncio.wait_for(task, 5)
        return json.loads(reply.split(b"\r\n\r\n", 1)[1])

    assert asyncio.run(scenario())["cell"] == "embedded-1"


def test_a_ledger_line_cut_short_by_a_kill_is_not_a_transfer(tmp_path: Path):
    ledger = tmp_path / "ledger.jsonl"
    whole = b'{"key":"k-1","fingerprint":"f","body":"{}","status":200,"payload":{"applied":true}}\n'
    ledger.write_bytes(whole + b'{"key":"k-2","finger')
    loaded = Ledger.load(str(ledger))
    assert (loaded.applied, set(loaded.entries)) == (1, {"k-1"})
    assert ledger.read_bytes() == whole, "the next append starts on a clean line"
    ledger.write_bytes(b"not json\n" + whole)
    with pytest.raises(ValueError, match="line 1"):
        Ledger.load(str(ledger))
