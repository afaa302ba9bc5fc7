"""Forwarding that survives a cell's death, against a real gateway and real cell processes: a
cell killed with SIGKILL under a steady GET load costs the client no error while its sibling is
eligible; its breaker opens, and closes again through half-open once it is back."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate.demo.launch import demo_token
from harness import CellProcesses, Gateway, start_gateway, write_retail_cells_config


@pytest.fixture
def two_cells(tmp_path: Path) -> Iterator[tuple[Gateway, CellProcesses]]:
    cells = CellProcesses(["retail-1", "retail-2"])
    config = write_retail_cells_config(tmp_path, cells.ports, wait_in_open_ms=1000)
    gateway = start_gateway(config)
    yield gateway, cells
    gateway.stop()
    cells.stop()


def steady_load(port: int, stop: threading.Event, statuses: Counter, cells_seen: Counter) -> None:
    """GETs one after another on one keep-alive connection until told to stop."""
    headers = {"Authorization": f"Bearer {demo_token('c-retail-us')}"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        conn.request("GET", "/api/accounts", headers=headers)
        response = conn.getresponse()
        body = response.read()
        statuses[response.status] += 1
        if response.status != 200:
            statuses[body.decode(errors="replace")[:200]] += 1
        else:
            cells_seen[response.getheader("x-served-by")] += 1
    conn.close()


def breaker_of(gateway: Gateway, cell_id: str) -> str:
    return next(c["breaker"] for c in gateway.cells() if c["id"] == cell_id)


def test_a_cell_killed_under_load_costs_the_client_nothing(two_cells):
    gateway, cells = two_cells
    stop = threading.Event()
    statuses: Counter = Counter()
    cells_seen: Counter = Counter()
    load = [
        threading.Thread(target=steady_load, args=(gateway.port, stop, statuses, cells_seen))
        for _ in range(4)
    ]
    for thread in load:
        thread.start()
    try:
        time.sleep(1.0)
        cells.kill("retail-1")
        opened = False
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not opened:
            opened = breaker_of(gateway, "retail-1") == "open"
            time.sleep(0.02)
        time.sleep(0.5)
        cells.start("retail-1")
        time.sleep(2.5)
    finally:
        stop.set()
        for thread in load:
            thread.join(timeout=15)
    assert statuses[200] > 200, statuses
    assert set(statuses) == {200}, statuses
    assert opened or not gateway.cells()[0]["healthy"], "the dead cell was taken out"
    assert cells_seen["retail-1"] > 0 and cells_seen["retail-2"] > 0, cells_seen
    # Back, healthy, and its breaker closed through half-open by a successful trial call.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and breaker_of(gateway, "retail-1") != "closed":
        time.sleep(0.05)
    assert breaker_of(gateway, "retail-1") == "closed"
    assert all(cell["healthy"] for cell in gateway.cells())
