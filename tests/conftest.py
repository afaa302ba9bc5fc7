"""Shared fixtures: free loopback ports, real demo cells and a real `cellgate serve` process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cellgate.demo.launch import DemoCells, demo_admin_token, demo_cells, render_demo_config


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """One request over a fresh connection: (status, headers, decoded JSON body or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
    finally:
        conn.close()


@dataclass
class Gateway:
    """A running `cellgate serve` process."""

    process: subprocess.Popen
    port: int
    config_path: Path

    def cells(self) -> list[dict]:
        status, _, body = http_json(
            self.port, "GET", "/_cellgate/cells", {"Authorization": f"Bearer {demo_admin_token()}"}
        )
        assert status == 200, body
        return body["cells"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


def start_gateway(config_path: Path, *extra: str) -> Gateway:
    """Starts `cellgate serve` and waits until it answers its liveness route."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cellgate.cli", "serve", "--config", str(config_path), "--port", str(port),
         "--log-level", "warning", *extra],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cellgate serve exited with {process.returncode}")
        try:
            if http_json(port, "GET", "/_cellgate/health")[0] == 200:
                return Gateway(process, port, config_path)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("cellgate serve did not come up within 30 s")


@pytest.fixture(scope="module")
def demo_cells_running() -> Iterator[DemoCells]:
    """The seven demo cells as real processes on free loopback ports."""
    cells = DemoCells({cell_id: free_port() for cell_id in demo_cells()})
    cells.start()
    yield cells
    cells.stop()


@pytest.fixture(scope="module")
def demo_config(demo_cells_running: DemoCells, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo configuration pointed at the running cells, with fast health checks."""
    path = render_demo_config(tmp_path_factory.mktemp("demo"), demo_cells_running.ports)
    text = path.read_text().replace("interval_ms = 1000", "interval_ms = 100").replace(
        "timeout_ms = 500", "timeout_ms = 100"
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def gateway(demo_config: Path) -> Iterator[Gateway]:
    """A real `cellgate serve` in front of the demo cells."""
    gw = start_gateway(demo_config)
    yield gw
    gw.stop()
