"""Money under faults, against a real gateway and real cell processes whose ledgers survive
them: transfers POSTed with and without an Idempotency-Key while one cell is killed and started
again in a loop. No transfer is applied twice (the ledgers prove it), every transfer the client
saw succeed is in exactly one ledger, and every failure the client saw is a problem answer with
its reason."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from cellgate.demo.launch import demo_token
from harness import CellProcesses, Gateway, http_json, start_gateway, write_retail_cells_config


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[Gateway, CellProcesses]]:
    cells = CellProcesses(["retail-1", "retail-2"], ledger_dir=tmp_path)
    config = write_retail_cells_config(tmp_path, cells.ports, wait_in_open_ms=500)
    gateway = start_gateway(config)
    yield gateway, cells
    gateway.stop()
    cells.stop()


def transfers(port: int, worker: int, stop: threading.Event, seen: list) -> None:
    """POSTs transfers one after another, every other one with an Idempotency-Key."""
    auth = f"Bearer {demo_token('c-retail-us')}"
    n = 0
    while not stop.is_set():
        transfer_id = f"t-{worker}-{n}"
        keyed = n % 2 == 0
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        if keyed:
            headers["Idempotency-Key"] = transfer_id
        body = orjson.dumps({"transfer_id": transfer_id, "amount": "1.00"})
        try:
            status, _, answer = http_json(port, "POST", "/api/transfers", headers, body)
        except OSError as err:
            status, answer = None, repr(err)
        seen.append((transfer_id, keyed, status, answer))
        n += 1


def applied(cells: CellProcesses) -> Counter:
    """How often each transfer id stands in the cells' ledgers, all cells together."""
    count: Counter = Counter()
    for cell_id in cells.ports:
        ledger = cells.ledger(cell_id)
        if ledger is None or not ledger.exists():
            continue
        for line in ledger.read_bytes().splitlines():
            if line.strip():
                count[orjson.loads(orjson.loads(line)["body"])["transfer_id"]] += 1
    return count


def slow_down(cells: CellProcesses, cell_id: str) -> None:
    """Transfers are applied on arrival and answered 60 ms later: a kill lands in between."""
    status, _, _ = http_json(cells.ports[cell_id], "POST", "/_cell/slow?ms=60")
    assert status == 200


def test_no_transfer_is_applied_twice_while_a_cell_dies_and_returns(faulty):
    gateway, cells = faulty
    for cell_id in cells.ports:
        slow_down(cells, cell_id)
    stop = threading.Event()
    seen: list = []
    workers = [
        threading.Thread(target=transfers, args=(gateway.port, w, stop, seen)) for w in range(3)
    ]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            time.sleep(0.4)
            cells.kill("retail-1")
            time.sleep(0.3)
            cells.start("retail-1")
            slow_down(cells, "retail-1")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=15)
    ledgers = applied(cells)
    assert len(seen) > 50, len(seen)
    twice = {transfer: n for transfer, n in ledgers.items() if n > 1}
    assert not twice, f"applied more than once: {twice}"
    succeeded = [s for s in seen if s[2] == 200]
    missing = [s[0] for s in succeeded if ledgers[s[0]] != 1]
    assert not missing, f"acknowledged but not in exactly one ledger: {missing[:5]}"
    failed = [s for s in seen if s[2] != 200]
    for transfer_id, keyed, status, answer in failed:
        assert status in (502, 503, 504), (transfer_id, keyed, status, answer)
        assert answer["reason"] in ("cell_unreachable", "no_eligible_cell", "cell_timeout"), answer
    # The faults did happen, and the keyed transfers came through them.
    assert any(keyed for _, keyed, status, _ in succeeded)
    print(f"{len(seen)} transfers, {len(failed)} refused, {sum(ledgers.values())} applied")
