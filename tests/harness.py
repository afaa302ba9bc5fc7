"""Test harness: free loopback ports, one-shot HTTP requests and a real `cellgate serve` process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cellgate.demo.launch import demo_admin_token


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(
    port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None
):
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
        [
            sys.executable,
            "-m",
            "cellgate.cli",
            "serve",
            "--config",
            str(config_path),
            "--port",
            str(port),
            "--log-level",
            "warning",
            *extra,
        ],
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
