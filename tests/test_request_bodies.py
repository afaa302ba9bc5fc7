"""Request bodies against a real gateway: counted while they are read, chunked or not (past
max_request_bytes the read stops: 413, and the worker's memory stays flat), cut off when they
trickle in (408), and a client that leaves mid-body leaves no cell slot behind."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cellgate.demo.launch import demo_token
from harness import Gateway, demo_variant, start_gateway

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def strict(demo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The demo with a 64 KiB body limit and one second for a body to arrive."""
    directory = tmp_path_factory.mktemp("bodies")
    text = demo_config.read_text() + (
        f"\n[forward]\nmax_request_bytes = {LIMIT}\nclient_body_timeout_ms = 1000\n"
    )
    gateway = start_gateway(demo_variant(demo_config, directory, text))
    yield gateway
    gateway.stop()


def head(extra: str) -> bytes:
    token = demo_token("c-corp-us")
    return (
        f"POST /api/transfers HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def read_reply(conn: socket.socket) -> tuple[int, dict]:
    reply = b""
    while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, orjson.loads(reply.partition(b"\r\n\r\n")[2])


def rss_kib(gateway: Gateway) -> int:
    """Resident memory of the gateway's processes (cellgate serve and its granian workers)."""
    family = {gateway.process.pid}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) in family:
                    family.add(int(pid))
        except (OSError, ValueError, IndexError):
            continue
    total = 0
    for pid in family:
        try:
            with open(f"/proc/{pid}/status") as status:
                rss = next(line for line in status if line.startswith("VmRSS:"))
                total += int(rss.split()[1])
        except (OSError, StopIteration):
            continue
    return total


def idle(gateway: Gateway) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(cell["in_flight"] == 0 for cell in gateway.cells()):
            return True
        time.sleep(0.05)
    return False


def test_an_endless_chunked_body_gets_413_and_memory_stays_flat(strict: Gateway):
    before = rss_kib(strict)
    conn = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    sent = {"bytes": 0}
    chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)

    def send_forever():
        try:
            conn.sendall(head("Transfer-Encoding: chunked\r\n"))
            while sent["bytes"] < 256 << 20:
                conn.sendall(chunk)
                sent["bytes"] += 16384
        except OSError:
            pass

    sender = threading.Thread(target=send_forever, daemon=True)
    sender.start()
    status, problem = read_reply(conn)
    conn.close()
    sender.join(timeout=10)
    assert status == 413, problem
    assert problem["reason"] == "body_too_large"
    assert "bytes read so far" in problem["detail"]
    grown_kib = rss_kib(strict) - before
    assert grown_kib < 16 * 1024, f"the gateway grew by {grown_kib} KiB"
    assert idle(strict), "the decision's slot was given back"


def test_a_chunked_body_past_the_limit_is_refused_while_it_is_read(strict: Gateway):
    # No Content-Length to check up front: counting the chunks as they come is what holds.
    conn = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    body = b"".join(b"%x\r\n%s\r\n" % (8192, b"y" * 8192) for _ in range(12)) + b"0\r\n\r\n"
    conn.sendall(head("Transfer-Encoding: chunked\r\n") + body)
    status, problem = read_reply(conn)
    conn.close()
    assert (status, problem["reason"]) == (413, "body_too_large")


def test_a_trickled_body_gets_408(strict: Gateway):
    conn = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    conn.sendall(head("Content-Length: 100\r\n"))
    started = time.monotonic()
    conn.settimeout(0.2)
    reply = b""
    while time.monotonic() - started < 5 and not reply:
        try:
            conn.sendall(b"z")
        except OSError:
            break
        try:
            reply = conn.recv(65536)
        except TimeoutError:
            continue
    conn.settimeout(10)
    reply += conn.recv(65536) if not reply.rstrip().endswith(b"}") else b""
    conn.close()
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    problem = orjson.loads(reply.partition(b"\r\n\r\n")[2])
    assert problem["reason"] == "client_body_timeout"
    assert 0.9 < time.monotonic() - started < 3
    assert idle(strict)


def test_a_client_gone_mid_body_leaves_no_slot(strict: Gateway):
    conn = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    conn.sendall(head("Content-Length: 1000\r\n") + b'{"amount": ')
    time.sleep(0.2)
    conn.close()
    assert idle(strict)
    # And the gateway goes on serving.
    conn = socket.create_connection(("127.0.0.1", strict.port), timeout=10)
    conn.sendall(head("Content-Length: 2\r\nConnection: close\r\n") + b"{}")
    status, echo = read_reply(conn)
    conn.close()
    assert status == 200, echo
