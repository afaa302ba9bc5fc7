"""Test harness: free loopback ports, one-shot HTTP requests and a real `cellgate serve` process."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cellgate.demo.launch import MTLS_CELLS, DemoCells, demo_admin_token, demo_tls

ADMIN = {"Authorization": f"Bearer {demo_admin_token()}"}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(
    port: int,
    method: str,
    path: str,
    headers: dict | None = None,
    body: bytes | None = None,
    *,
    tls: ssl.SSLContext | None = None,
):
    """One request over a fresh connection (TLS with ``tls``): (status, headers, decoded JSON
    body or raw bytes)."""
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
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


def keep_requesting(
    port: int,
    headers: dict,
    stop: threading.Event,
    ok: list[str],
    failed: list[int] | None = None,
) -> None:
    """GET /api/accounts on fresh connections until ``stop`` is set: the request id of each
    2xx answer goes into ``ok``, any other status (0: the connection failed) into ``failed``."""
    while not stop.is_set():
        try:
            status, answered, _ = http_json(port, "GET", "/api/accounts", headers)
        except OSError:
            if failed is not None:
                failed.append(0)
            time.sleep(0.01)
            continue
        if 200 <= status < 300:
            ok.append(answered["x-request-id"])
        elif failed is not None:
            failed.append(status)


def tls_client(ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None):
    """A TLS client context trusting only ``ca_file``, presenting ``cert_file`` when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


def to_demo_cell(
    cells: DemoCells,
    cell_id: str,
    method: str,
    path: str,
    headers: dict | None = None,
    body: bytes | None = None,
):
    """One request straight to a running demo cell (over mTLS with the gateway's certificate
    where the cell requires one), as :func:`http_json` answers it."""
    tls = None
    if cell_id in MTLS_CELLS:
        certificates = demo_tls(cells.directory)
        tls = tls_client(
            certificates.ca_file, certificates.gateway_cert_file, certificates.gateway_key_file
        )
    return http_json(cells.ports[cell_id], method, path, headers, body, tls=tls)


#: The demo cells that serve the retail us-east customer (two of them by fallback).
US_EAST = ("retail-us-east-1", "retail-us-east-2", "corp-us-east-1", "hnw-us-east-1")


def burst_through_slow_cells(
    cells: DemoCells, cell_ids: tuple[str, ...], port: int, headers: dict, count: int = 12
) -> list:
    """``count`` requests at once, each on its own connection, to the gateway on ``port``
    while the cells ``cell_ids`` answer only after 1.5 s (so every forward stays in flight);
    their answers, as :func:`http_json` gives them. The cells answer at once again after."""
    for cell in cell_ids:
        assert to_demo_cell(cells, cell, "POST", "/_cell/slow?ms=1500")[0] == 200
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            return list(
                pool.map(lambda _: http_json(port, "GET", "/api/accounts", headers), range(count))
            )
    finally:
        for cell in cell_ids:
            to_demo_cell(cells, cell, "POST", "/_cell/reset")


@dataclass
class Gateway:
    """A running `cellgate serve` process."""

    process: subprocess.Popen
    port: int
    config_path: Path

    def workers(self) -> list[int]:
        """The pids of granian's worker processes, the master's children."""
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                children.append(int(stat.parent.name))
        return children

    def cells(self) -> list[dict]:
        status, _, body = http_json(self.port, "GET", "/_cellgate/cells", ADMIN)
        assert status == 200, body
        return body["cells"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                # Past the 30 s grace: a worker that is still starting when SIGTERM comes is
                # only stopped when granian kills it at the end of the grace.
                return self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        return self.process.returncode


def start_limited_gateway(demo_config: Path, directory: Path, *extra: str) -> Gateway:
    """`cellgate serve` (with ``extra`` arguments) on the demo with every cell limited to 2
    forwards at once, and no quota in the way; its configuration in ``directory``."""
    text = re.sub(
        r"rate_limit = \{[^}]*\}",
        "rate_limit = { requests = 6000000, period_s = 60, burst = 1000000 }",
        demo_config.read_text(),
    )
    text = text.replace("capacity = ", "max_in_flight = 2\ncapacity = ")
    return start_gateway(demo_variant(demo_config, directory, text), *extra)


def demo_variant(demo_config: Path, directory: Path, text: str) -> Path:
    """A variant of the demo configuration (its ``text``) written into ``directory`` with the
    demo's customers and TLS material beside it, so that its relative paths still resolve."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "customers.jsonl").write_text((demo_config.parent / "customers.jsonl").read_text())
    tls = demo_config.parent / "tls"
    if tls.is_dir() and not (directory / "tls").exists():
        (directory / "tls").symlink_to(tls, target_is_directory=True)
    path = directory / "cellgate.toml"
    path.write_text(text)
    return path


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
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    deadline = time.monotonic() + 30
    answered: set[int] = set()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"cellgate serve exited with {process.returncode}")
        try:
            if http_json(port, "GET", "/_cellgate/health")[0] != 200:
                time.sleep(0.1)
                continue
            if workers == 1:
                return Gateway(process, port, config_path)
            # A worker still starting takes no connection: wait until each has answered.
            status, _, state = http_json(port, "GET", "/_cellgate/state", ADMIN)
            if status != 200:  # no admin API, or another admin secret: cannot tell workers apart
                return Gateway(process, port, config_path)
            answered.add(state["worker_pid"])
            if len(answered) == workers:
                return Gateway(process, port, config_path)
            time.sleep(0.05)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"cellgate serve did not come up with {workers} worker(s) within 30 s")


def start_cell(cell_id: str, port: int, ledger: Path | None = None) -> subprocess.Popen:
    """A demo cell process on ``port`` (keeping its ledger in ``ledger``), once it listens."""
    argv = [sys.executable, "-m", "cellgate.demo.cell", "--id", cell_id, "--port", str(port)]
    if ledger is not None:
        argv += ["--ledger", str(ledger)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert "listening" in process.stdout.readline()
    return process


class CellProcesses:
    """Demo cells as processes on free ports that a test may kill and start again; with
    ``ledger_dir`` each keeps its ledger in ``<ledger_dir>/<id>.jsonl`` across restarts."""

    def __init__(self, cell_ids: list[str], ledger_dir: Path | None = None) -> None:
        self.ports = {cell_id: free_port() for cell_id in cell_ids}
        self.ledger_dir = ledger_dir
        self.processes = {cid: self._start(cid) for cid in cell_ids}

    def ledger(self, cell_id: str) -> Path | None:
        return None if self.ledger_dir is None else self.ledger_dir / f"{cell_id}.jsonl"

    def _start(self, cell_id: str) -> subprocess.Popen:
        return start_cell(cell_id, self.ports[cell_id], self.ledger(cell_id))

    def kill(self, cell_id: str) -> None:
        process = self.processes[cell_id]
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def start(self, cell_id: str) -> None:
        self.processes[cell_id] = self._start(cell_id)

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


RETAIL_CUSTOMER = '{"customer_id": "c-retail-us", "tier": "retail", "region": "us-east"}\n'


def write_retail_cells_config(directory: Path, ports: dict[str, int], wait_in_open_ms: int) -> Path:
    """A configuration of the demo's keys and one retail customer in front of retail cells at
    ``ports``, with fast health checks and a breaker that opens after 3 failures in a row and
    closes after one good trial call once ``wait_in_open_ms`` has passed."""
    from cellgate.demo.launch import topology_text

    (directory / "customers.jsonl").write_text(RETAIL_CUSTOMER)
    top = topology_text()
    jwt = top.split("[admin]")[0]
    admin = "[admin]" + top.split("[admin]")[1].split("[tiers.retail]")[0]
    cell_tables = "".join(
        f"""
[[cells]]
id = "{cell_id}"
tier = "retail"
region = "us-east"
endpoint = "http://127.0.0.1:{port}"
capacity = 100
"""
        for cell_id, port in ports.items()
    )
    path = directory / "cellgate.toml"
    path.write_text(
        f"""{jwt}{admin}
[tiers.retail]
placement = "least_loaded"
{cell_tables}
[breaker]
consecutive_failures = 3
wait_in_open_ms = {wait_in_open_ms}
successes_to_close = 1

[health]
interval_ms = 100
timeout_ms = 100
rise = 1
fall = 2

[forward]
connect_timeout_ms = 300
request_timeout_ms = 3000

[profiles]
source = "customers.jsonl"
"""
    )
    return path


def own_demo_cell(demo_config: Path, cell_id: str) -> tuple[int, subprocess.Popen, str]:
    """A demo cell ``cell_id`` of the test's own (no other gateway reaches it): its port, its
    process, and the demo configuration's text pointed at it."""
    text, pointed = re.subn(
        rf'(id = "{re.escape(cell_id)}"[^\[]*?endpoint = "http://127\.0\.0\.1:)\d+',
        lambda m: m[1] + "{port}",
        demo_config.read_text(),
    )
    assert pointed == 1, f"{cell_id} is not a plain http:// cell of the demo configuration"
    port = free_port()
    own = start_cell(cell_id, port)
    return port, own, text.replace("{port}", str(port))


def stop_cell(cell: subprocess.Popen) -> None:
    cell.terminate()
    cell.wait(timeout=10)
    cell.stdout.close()
