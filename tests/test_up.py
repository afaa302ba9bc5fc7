"""`cellgate up`, the README's first command: demo cells, demo customers and the gateway start,
the printed curl lines work (the hnw customer's through the mTLS cell), SIGTERM stops everything
cleanly, and the demo's throwaway certificates are made in its directory on the first start and
reused on the next."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audit_trails import check_trail, records
from cellgate.demo.launch import demo_admin_token, demo_token
from harness import free_port, http_json

pytestmark = pytest.mark.timeout(90)
DEMO_CELLS = 7


def free_port_run(length: int) -> int:
    """The first of ``length`` consecutive free loopback ports."""
    for _ in range(50):
        base = free_port()
        if base + length > 65535:
            continue
        taken = []
        try:
            for port in range(base, base + length):
                sock = socket.socket()
                taken.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in taken:
                sock.close()
    raise RuntimeError("no run of free ports")


def start_up(demo_dir: Path, *extra: str) -> tuple[subprocess.Popen, int, int, list[str]]:
    """Starts `cellgate up` in ``demo_dir`` on free ports; returns it, the gateway's port, the
    first cell's port and what it printed, once it has printed everything."""
    port, cell_base = free_port(), free_port_run(DEMO_CELLS)
    up = subprocess.Popen(
        [
            *(sys.executable, "-m", "cellgate.cli", "up", *extra, "--port", str(port)),
            *("--cell-port-base", str(cell_base), "--log-level", "warning"),
            *("--demo-dir", str(demo_dir)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed: list[str] = []
    while not any(line.startswith("# live cell state") for line in printed):
        line = up.stdout.readline()
        if not line:
            up.kill()
            up.wait()
            up.stdout.close()
            raise AssertionError("cellgate up ended early:\n" + "".join(printed))
        printed.append(line)
    return up, port, cell_base, printed


def stop_up(up: subprocess.Popen) -> None:
    """Stops `cellgate up` as a user does (so it stops its cells and its Redis), killing it
    only if it will not stop."""
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=20)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
    up.stdout.close()


def run_up_once(demo_dir: Path) -> None:
    """Runs `cellgate up` in ``demo_dir`` until its curl lines work (the retail customer's and
    the hnw customer's, served over mTLS), then stops it with SIGTERM; the demo's audit trail
    then verifies and holds the requests."""
    up, port, cell_base, printed = start_up(demo_dir)
    try:
        curls = [line for line in printed if line.startswith(f"curl -s http://127.0.0.1:{port}")]
        assert len(curls) == 7, "one curl line per demo customer"
        customers = [line for line in printed if line.startswith("# c-")]
        hnw = next(i for i, line in enumerate(customers) if line.startswith("# c-hnw-us:"))
        for index, cell in ((0, "retail-us-east-"), (hnw, "hnw-us-east-1")):
            token = re.search(r"Bearer ([\w.-]+)", curls[index])[1]
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, _, echo = http_json(
                        port, "GET", "/api/accounts", {"Authorization": f"Bearer {token}"}
                    )
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the gateway never answered"
                    time.sleep(0.2)
            assert status == 200 and echo["cell"].startswith(cell), echo
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=20) == 0
        for cell_port in range(cell_base, cell_base + DEMO_CELLS):
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", cell_port)) != 0, "a demo cell outlived up"
        # The demo's trail, in buffered mode beside its configuration, holds the request.
        (verify,) = [line.split() for line in printed if line.startswith("cellgate audit verify")]
        trail = Path(verify[-1])
        assert trail == demo_dir / "audit"
        assert check_trail(trail)["records"] >= 1
        verified = subprocess.run(
            [sys.executable, "-m", "cellgate.cli", *verify[1:]], capture_output=True, text=True
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        customers_seen = {r.get("customer") for r in records(trail)}
        assert {"c-retail-us", "c-hnw-us"} <= customers_seen
    finally:
        stop_up(up)


def test_cellgate_up_serves_the_demo_and_keeps_its_certificates(tmp_path: Path):
    demo_dir = tmp_path / "demo"
    run_up_once(demo_dir)
    tls = demo_dir / "tls"
    made = {path.name: path.read_bytes() for path in tls.iterdir()}
    assert sorted(made) == ["ca.pem", "cell.key", "cell.pem", "gateway.key", "gateway.pem"]
    assert sorted(p.name for p in demo_dir.iterdir()) == [
        "audit",
        "audit-signing.pem",
        "cellgate.toml",
        "customers.jsonl",
        "tls",
    ]
    assert 'endpoint = "https://127.0.0.1:' in (demo_dir / "cellgate.toml").read_text()
    run_up_once(demo_dir)
    assert {path.name: path.read_bytes() for path in tls.iterdir()} == made, "made once, reused"


def test_cellgate_up_with_redis_shares_state_through_its_own_redis(tmp_path: Path):
    up, port, _, printed = start_up(tmp_path / "demo", "--redis")
    try:
        (shared,) = [line for line in printed if "state shared through redis://" in line]
        redis_port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/", shared)[1])
        admin = {"Authorization": f"Bearer {demo_admin_token()}"}
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, state = http_json(port, "GET", "/_cellgate/state", admin)
                if status == 200 and state["redis"]["subscribed"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway never subscribed to its Redis"
            time.sleep(0.2)
        assert state["scope"] == "cluster"
        token = {"Authorization": f"Bearer {demo_token('c-retail-us')}"}
        assert http_json(port, "GET", "/api/accounts", token)[0] == 200
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=20) == 0
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", redis_port)) != 0, "the demo's Redis outlived up"
    finally:
        stop_up(up)


def test_cellgate_up_with_redis_but_no_redis_server_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from cellgate import cli, redis_server

    def missing() -> str:
        raise redis_server.RedisServerMissing(
            "redis-server: not found; bash scripts/install-test-deps.sh"
        )

    monkeypatch.setattr(redis_server, "find_redis_server", missing)
    assert cli.main(["up", "--redis", "--demo-dir", str(tmp_path / "demo")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cellgate up: --redis: redis-server: not found")
