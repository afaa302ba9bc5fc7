"""Cell load one truth across workers: with two granian workers sharing the node's zone, a
cell's max_in_flight holds over both, the in-flight count every worker reports is the node's,
and slots held by a worker SIGKILLed mid-request come back once granian has respawned it."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate.demo.launch import demo_token
from harness import (
    ADMIN,
    US_EAST,
    Gateway,
    burst_through_slow_cells,
    demo_variant,
    http_json,
    start_gateway,
    start_limited_gateway,
)


@pytest.fixture(scope="module")
def limited_pair(demo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two workers, every cell limited to 2 forwards at once, and no quota in the way."""
    directory = tmp_path_factory.mktemp("limited-pair")
    gateway = start_limited_gateway(demo_config, directory, "--workers", "2")
    yield gateway
    gateway.stop()


def _node_in_flight(gateway: Gateway) -> int:
    return sum(cell["in_flight"] for cell in gateway.cells())


def test_max_in_flight_holds_across_two_workers(limited_pair: Gateway, demo_cells_running):
    headers = {"Authorization": f"Bearer {demo_token('c-retail-us')}"}
    # Each request on its own connection: granian spreads them over both workers.
    answers = burst_through_slow_cells(demo_cells_running, US_EAST, limited_pair.port, headers)
    served = Counter(body["cell"] for status, _, body in answers if status == 200)
    refused = [body for status, _, body in answers if status != 200]
    # Per worker, each cell would take 2 from each worker; over the node, 2 in all.
    assert all(count <= 2 for count in served.values()), served
    assert sum(served.values()) == 8 and len(refused) == 4, (served, refused)
    assert {problem["reason"] for problem in refused} == {"cell_saturated"}
    # Every worker reports the node's count, and it is back to 0.
    assert [_node_in_flight(limited_pair) for _ in range(10)] == [0] * 10


def test_slots_of_workers_killed_mid_request_come_back(limited_pair: Gateway, demo_cells_running):
    cell_port = demo_cells_running.ports["corp-us-east-1"]
    http_json(cell_port, "POST", "/_cell/hang")
    token = demo_token("c-corp-us")
    request = f"GET /api/positions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n"
    connections = []
    try:
        for _ in range(2):
            conn = socket.create_connection(("127.0.0.1", limited_pair.port), timeout=10)
            conn.sendall(request.encode())
            connections.append(conn)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _node_in_flight(limited_pair) < 2:
            time.sleep(0.05)
        assert _node_in_flight(limited_pair) == 2, "both forwards are held on the cell"
        workers = limited_pair.workers()
        assert len(workers) >= 2, workers
        for pid in workers:
            subprocess.run(["kill", "-KILL", str(pid)], check=True)
    finally:
        http_json(cell_port, "POST", "/_cell/reset")
        for conn in connections:
            conn.close()
    # granian respawns the workers; the first to find a dead worker's record gives its slots back.
    deadline = time.monotonic() + 20
    counts = None
    while time.monotonic() < deadline:
        try:
            counts = [_node_in_flight(limited_pair) for _ in range(4)]
        except (OSError, AssertionError):
            counts = None
        if counts == [0] * 4:
            break
        time.sleep(0.2)
    assert counts == [0] * 4, counts
    status, _, body = http_json(
        limited_pair.port, "GET", "/api/positions", {"Authorization": f"Bearer {token}"}
    )
    assert (status, body["cell"]) == (200, "corp-us-east-1")


def test_one_worker_of_the_node_probes_the_cells(
    demo_config: Path, tmp_path: Path, own_retail_cell: tuple[int, str]
):
    # A cell of this test's own, so that no other gateway's probes reach it. The demo
    # configuration probes every 100 ms: one prober makes about 10 checks a second, two 20.
    port, text = own_retail_cell
    gateway = start_gateway(demo_variant(demo_config, tmp_path / "probes", text), "--workers", "2")
    try:
        time.sleep(1.0)

        def checks() -> int:
            return http_json(port, "GET", "/_cell/stats")[2]["health_checks"]

        before = checks()
        time.sleep(3.0)
        made = checks() - before
    finally:
        gateway.stop()
    assert 15 <= made <= 45, f"{made} checks in 3 s: expected one prober's 30"


def test_a_breaker_opened_through_one_worker_refuses_on_the_other(
    demo_config: Path, tmp_path: Path, own_retail_cell: tuple[int, str]
):
    port, text = own_retail_cell
    text = text.replace("wait_in_open_ms = 30000", f"wait_in_open_ms = {WAIT_IN_OPEN_S * 1000:.0f}")
    gateway = start_gateway(demo_variant(demo_config, tmp_path / "breaker", text), "--workers", "2")
    headers = {"Authorization": f"Bearer {demo_token('c-retail-us')}"}
    try:
        assert http_json(port, "POST", "/_cell/fail?status=500")[0] == 200
        # One kept-alive connection: one worker sees every failure and its breaker opens.
        one_worker = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
        try:
            for _ in range(16):
                one_worker.request("GET", "/api/accounts", headers=headers)
                one_worker.getresponse().read()
        finally:
            one_worker.close()
        assert http_json(port, "POST", "/_cell/reset")[0] == 200
        # Fresh connections reach both workers: none may pick the cell while it is open.
        cells = Counter(
            http_json(gateway.port, "GET", "/api/accounts", headers)[2]["cell"] for _ in range(30)
        )
        assert cells == Counter({"retail-us-east-2": 30}), cells
        # Every worker says so, and takes the opening as its own breaker's: when it ends, each
        # lets a few trial calls through (half-open), none the whole flood (closed).
        assert _breaker_by_worker(gateway, "retail-us-east-1") == {"open"}
        time.sleep(WAIT_IN_OPEN_S)
        assert _breaker_by_worker(gateway, "retail-us-east-1") == {"half_open"}
    finally:
        gateway.stop()


WAIT_IN_OPEN_S = 3.0


def _breaker_by_worker(gateway: Gateway, cell_id: str) -> set[str]:
    """The cell's breaker state as each worker reports it, asking until every worker has."""
    states: dict[int, str] = {}
    deadline = time.monotonic() + 10
    while len(states) < len(gateway.workers()) and time.monotonic() < deadline:
        status, _, answer = http_json(gateway.port, "GET", "/_cellgate/cells", ADMIN)
        assert status == 200, answer
        cell = next(cell for cell in answer["cells"] if cell["id"] == cell_id)
        states[answer["worker_pid"]] = cell["breaker"]
    assert len(states) == 2, states
    return set(states.values())
