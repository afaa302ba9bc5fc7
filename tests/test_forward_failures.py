"""Forwarding failures end to end: an unreachable cell is a 502, a silent one a 504, and neither
leaves a slot held."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate.demo.launch import demo_token, topology_text
from harness import Gateway, free_port, http_json, start_gateway

CUSTOMERS = """\
{"customer_id": "c-retail-us", "tier": "retail", "region": "us-east"}
{"customer_id": "c-corp-us", "tier": "corporate", "region": "us-east"}
"""


class SilentCell:
    """Accepts connections and reads requests, but never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture(scope="module")
def failing_gateway(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, SilentCell]]:
    silent = SilentCell()
    directory: Path = tmp_path_factory.mktemp("failing")
    (directory / "customers.jsonl").write_text(CUSTOMERS)
    # Health checks far apart, so the router still believes in both cells while we test the forward.
    text = (
        topology_text().split("[[cells]]")[0]
        + f"""
[[cells]]
id = "retail-gone"
tier = "retail"
region = "us-east"
endpoint = "http://127.0.0.1:{free_port()}"
capacity = 10

[[cells]]
id = "corp-silent"
tier = "corporate"
region = "us-east"
endpoint = "http://127.0.0.1:{silent.port}"
capacity = 10

[health]
interval_ms = 600000
timeout_ms = 100

[forward]
connect_timeout_ms = 300
request_timeout_ms = 700
# Retries off: each failure is seen as it is (tests/test_retries.py has them on).
retry = {{ retries = 0 }}

[profiles]
source = "customers.jsonl"
"""
    )
    config = directory / "cellgate.toml"
    config.write_text(text)
    gw = start_gateway(config)
    yield gw, silent
    gw.stop()
    silent.close()


def test_an_unreachable_cell_is_502_cell_unreachable(failing_gateway):
    gw, _ = failing_gateway
    auth = {"Authorization": f"Bearer {demo_token('c-retail-us')}"}
    status, headers, problem = http_json(gw.port, "GET", "/api/accounts", auth)
    assert status == 502
    assert problem["reason"] == "cell_unreachable"
    assert "retail-gone" in problem["detail"]
    assert problem["request_id"] == headers["x-request-id"]
    assert all(cell["in_flight"] == 0 for cell in gw.cells())


def test_a_silent_cell_is_504_cell_timeout(failing_gateway):
    gw, _ = failing_gateway
    auth = {"Authorization": f"Bearer {demo_token('c-corp-us')}"}
    status, _, problem = http_json(gw.port, "GET", "/api/accounts", auth)
    assert status == 504
    assert problem["reason"] == "cell_timeout"
    assert "700 ms" in problem["detail"]
    assert all(cell["in_flight"] == 0 for cell in gw.cells())
