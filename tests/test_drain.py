"""A clean drain, against a real gateway and real cells: on SIGTERM the gateway stops accepting,
lets the request in flight finish and exits 0; past shutdown_grace_s it stops anyway."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from pathlib import Path

import pytest
from cellgate.demo.launch import demo_token
from harness import Gateway, demo_variant, http_json, start_gateway

AUTH = {"Authorization": f"Bearer {demo_token('c-corp-us')}"}


def gateway_with(demo_config: Path, directory: Path, extra: str = "") -> Gateway:
    return start_gateway(demo_variant(demo_config, directory, demo_config.read_text() + extra))


@pytest.fixture
def slow_corp_cell(demo_cells_running):
    def slow(ms: int) -> None:
        port = demo_cells_running.ports["corp-us-east-1"]
        assert http_json(port, "POST", f"/_cell/slow?ms={ms}")[0] == 200

    yield slow
    http_json(demo_cells_running.ports["corp-us-east-1"], "POST", "/_cell/reset")


def in_flight_request(gateway: Gateway) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def request() -> None:
        try:
            result["status"] = http_json(gateway.port, "GET", "/api/positions", AUTH)[0]
        except OSError as err:
            result["error"] = repr(err)

    thread = threading.Thread(target=request)
    thread.start()
    return thread, result


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(
    demo_config: Path, tmp_path: Path, slow_corp_cell
):
    gateway = gateway_with(demo_config, tmp_path / "drain")
    slow_corp_cell(1000)
    thread, result = in_flight_request(gateway)
    time.sleep(0.3)
    gateway.process.send_signal(signal.SIGTERM)
    thread.join(timeout=15)
    assert result == {"status": 200}
    assert gateway.process.wait(timeout=15) == 0
    with pytest.raises(OSError):
        http_json(gateway.port, "GET", "/_cellgate/health")


def test_past_the_grace_period_the_gateway_stops_anyway(
    demo_config: Path, tmp_path: Path, slow_corp_cell
):
    gateway = gateway_with(demo_config, tmp_path / "grace", "\n[server]\nshutdown_grace_s = 1\n")
    slow_corp_cell(8000)
    thread, result = in_flight_request(gateway)
    time.sleep(0.3)
    started = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    assert gateway.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 4
    thread.join(timeout=15)
    assert "status" not in result, "the cell was still answering when the grace ran out"


def test_during_the_drain_an_idle_kept_alive_connection_is_closed_and_nothing_is_cut_off(
    demo_config: Path, tmp_path: Path, slow_corp_cell
):
    gateway = gateway_with(demo_config, tmp_path / "kept-alive")
    kept_alive = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        kept_alive.request("GET", "/api/positions", headers=AUTH)
        first = kept_alive.getresponse()
        first.read()
        assert first.status == 200
        slow_corp_cell(1500)
        thread, result = in_flight_request(gateway)
        time.sleep(0.3)
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.6)
        # granian closes the idle connection unanswered: the request was never read, so a
        # client may send it again elsewhere.
        with pytest.raises(http.client.RemoteDisconnected):
            kept_alive.request("GET", "/api/positions", headers=AUTH)
            kept_alive.getresponse()
        thread.join(timeout=15)
        assert result == {"status": 200}, "the request in flight was cut off"
        assert gateway.process.wait(timeout=15) == 0
    finally:
        kept_alive.close()
