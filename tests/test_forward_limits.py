"""Forwarding limits against a real gateway and real cells: a cell at its max_in_flight passes
requests on to the next eligible cell, and with none left the answer is 503 cell_saturated."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate.demo.launch import demo_token
from harness import (
    US_EAST,
    Gateway,
    burst_through_slow_cells,
    http_json,
    start_limited_gateway,
)


@pytest.fixture(scope="module")
def limited(demo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The demo with every cell limited to 2 forwards at once, and no quota in the way."""
    gateway = start_limited_gateway(demo_config, tmp_path_factory.mktemp("limited"))
    yield gateway
    gateway.stop()


def test_max_in_flight_holds_under_a_burst(limited: Gateway, demo_cells_running):
    headers = {"Authorization": f"Bearer {demo_token('c-retail-us')}"}
    answers = burst_through_slow_cells(demo_cells_running, US_EAST, limited.port, headers)
    served = Counter(body["cell"] for status, _, body in answers if status == 200)
    refused = [body for status, _, body in answers if status != 200]
    # Four cells of us-east take the retail customer (two by fallback), two at a time each.
    assert sorted(served) == sorted(US_EAST), served
    assert all(count == 2 for count in served.values()), served
    assert len(refused) == 4
    for problem in refused:
        assert problem["status"] == 503
        assert problem["reason"] == "cell_saturated"
        assert "at its limit (2 of max_in_flight 2 in flight)" in problem["detail"]
    assert all(cell["in_flight"] == 0 for cell in limited.cells())


def test_a_client_that_leaves_cancels_its_forward(limited: Gateway, demo_cells_running):
    """The cell hangs; the client gives up: within moments the gateway has dropped its
    connection to the cell and given the slot back, and counted nothing against the cell."""
    cell_port = demo_cells_running.ports["corp-us-east-1"]
    http_json(cell_port, "POST", "/_cell/hang")
    try:
        token = demo_token("c-corp-us")
        conn = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
        request = (
            f"GET /api/positions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        conn.sendall(request.encode())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and cell_stats(cell_port)["in_flight"] != 1:
            time.sleep(0.02)
        assert cell_stats(cell_port)["in_flight"] == 1, "the forward reached the cell"
        conn.close()
        left = time.monotonic()
        while time.monotonic() < deadline and (
            cell_stats(cell_port)["in_flight"] or any(c["in_flight"] for c in limited.cells())
        ):
            time.sleep(0.02)
        assert cell_stats(cell_port)["in_flight"] == 0, "the connection to the cell was dropped"
        assert all(c["in_flight"] == 0 for c in limited.cells()), "the slot was given back"
        assert time.monotonic() - left < 2
        corp = next(c for c in limited.cells() if c["id"] == "corp-us-east-1")
        assert corp["breaker"] == "closed" and corp["healthy"]
    finally:
        http_json(cell_port, "POST", "/_cell/reset")


def cell_stats(port: int) -> dict:
    return http_json(port, "GET", "/_cell/stats")[2]
