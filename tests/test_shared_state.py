"""State one truth across workers: with two granian workers sharing the node's zone, a
revocation through one admin call holds on every worker and after a restart, a customer's burst
holds exactly across both, and a process killed at any moment of an update leaves a zone the
others keep using."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate import _core
from cellgate.config import build_router, load_config, parse_config
from cellgate.demo.launch import demo_admin_token, demo_token
from harness import Gateway, http_json, start_gateway

ADMIN = {"Authorization": f"Bearer {demo_admin_token()}", "Content-Type": "application/json"}


def bearer(customer_id: str, **claims) -> dict:
    return {"Authorization": f"Bearer {demo_token(customer_id, **claims)}"}


@pytest.fixture(scope="module")
def two_workers(demo_config: Path) -> Iterator[Gateway]:
    gateway = start_gateway(demo_config, "--workers", "2")
    yield gateway
    gateway.stop()


def test_the_zone_is_created_for_the_workers_and_removed_on_exit(demo_config: Path):
    before = set(Path("/dev/shm").glob("cellgate-*.zone"))
    gateway = start_gateway(demo_config, "--workers", "2")
    try:
        status, _, answer = http_json(gateway.port, "GET", "/_cellgate/revocations", ADMIN)
        assert (status, answer["scope"]) == (200, "node")
        # The harness waited until each worker had answered; each names itself.
        answering = {
            http_json(gateway.port, "GET", "/_cellgate/state", ADMIN)[2]["worker_pid"]
            for _ in range(40)
        }
        assert answering <= set(gateway.workers()) and gateway.process.pid not in answering
        made = set(Path("/dev/shm").glob("cellgate-*.zone")) - before
        assert [zone.name for zone in made] == [f"cellgate-{gateway.process.pid}.zone"]
    finally:
        gateway.stop()
    assert not (made & set(Path("/dev/shm").glob("cellgate-*.zone")))


def test_a_revocation_through_one_worker_holds_on_every_worker_and_after_a_restart(
    two_workers: Gateway, demo_config: Path
):
    token = bearer("c-corp-us", jti="revoked-on-the-node")
    other = bearer("c-corp-us", jti="still-good")
    # Warm both workers' token caches with the token first.
    assert all(
        http_json(two_workers.port, "GET", "/api/accounts", token)[0] == 200 for _ in range(20)
    )
    body = b'{"jti": "revoked-on-the-node", "forget_after_s": 4102444800}'
    status, _, answer = http_json(two_workers.port, "POST", "/_cellgate/revocations", ADMIN, body)
    assert (status, answer["scope"], answer["lasting"], answer["tokens"]) == (200, "node", True, 1)
    statuses = [http_json(two_workers.port, "GET", "/api/accounts", token)[0] for _ in range(60)]
    assert statuses == [401] * 60
    assert http_json(two_workers.port, "GET", "/api/accounts", other)[0] == 200

    cut_off = f'{{"customer_id": "c-hnw-us", "issued_before_s": {time.time() - 30}}}'.encode()
    old = bearer("c-hnw-us", iat=int(time.time()) - 60)
    assert http_json(two_workers.port, "POST", "/_cellgate/revocations", ADMIN, cut_off)[0] == 200
    assert {http_json(two_workers.port, "GET", "/api/accounts", old)[0] for _ in range(40)} == {401}

    for workers in ("2", "1"):
        restarted = start_gateway(demo_config, "--workers", workers)
        try:
            for _ in range(20):
                assert http_json(restarted.port, "GET", "/api/accounts", token)[0] == 401
                assert http_json(restarted.port, "GET", "/api/accounts", old)[0] == 401
            assert http_json(restarted.port, "GET", "/api/accounts", other)[0] == 200
        finally:
            restarted.stop()
    path = "/_cellgate/revocations/customers/c-hnw-us"
    assert http_json(two_workers.port, "DELETE", path, ADMIN)[2]["lifted"] is True
    assert {http_json(two_workers.port, "GET", "/api/accounts", old)[0] for _ in range(20)} == {200}


def test_a_burst_holds_exactly_across_two_workers(two_workers: Gateway):
    # retail: 600 per 60 s (T = 0.1 s), burst 60. GCRA admits at most burst + floor(d / T) over
    # any d seconds, and at least the burst from a full bucket.
    headers = bearer("c-retail-eu")
    start = time.monotonic()
    statuses = [http_json(two_workers.port, "GET", "/api/accounts", headers)[0] for _ in range(150)]
    elapsed_s = time.monotonic() - start
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert 60 <= admitted <= 60 + math.floor(elapsed_s / 0.1), (admitted, elapsed_s)


def _hammer(path: str) -> subprocess.Popen:
    code = f"from cellgate import _core; _core.Zone({path!r}).hammer(30)"
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_process_killed_mid_update_leaves_a_zone_the_others_keep_using(
    tmp_path: Path, demo_config: Path
):
    path = str(tmp_path / "hammered.zone")
    zone = _core.Zone.create(path, 64, 64)
    rng = random.Random(11)
    for _ in range(25):
        process = _hammer(path)
        time.sleep(0.05 + rng.random() * 0.1)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    # Another process, and this one, carry on: the lock is never wedged.
    survivor = _hammer(path)
    zone.hammer(0.3)
    survivor.kill()
    survivor.wait()
    counters = zone.counters
    assert counters["evicted_quotas"] > 0, "the tables were full, as planned"
    # Revocations and quotas still behave exactly on the hammered zone.
    zone.revoke_customer("c-retail-us", time.time() + 3600)
    router = build_router(load_config(demo_config), state_zone=path)
    assert router.state_scope == "node"
    refused = router.decide(
        "GET", "/api/accounts", f"Bearer {demo_token('c-retail-us')}", "127.0.0.1"
    )
    assert (refused.ok, refused.reason) == (False, "token_revoked")
    assert zone.lift_customer("c-retail-us")
    authorization = f"Bearer {demo_token('c-retail-eu')}"
    decisions = [
        router.decide("GET", "/api/accounts", authorization, "127.0.0.1") for _ in range(70)
    ]
    admitted = sum(decision.ok for decision in decisions)
    assert 60 <= admitted <= 61


def test_with_a_token_lifetime_limit_a_longer_lived_token_cannot_outlast_a_cut_off(
    demo_config: Path,
):
    # A cut-off is forgotten max_token_lifetime_s after its time; a token living longer, or not
    # saying when it was issued, would be accepted again after that: such tokens are refused.
    text = demo_config.read_text() + "\n[state]\nmax_token_lifetime_s = 3600\n"
    config = parse_config(text, demo_config.parent)
    router = build_router(config)
    now = int(time.time())

    def decided(**claims):
        token = demo_token("c-corp-us", **claims)
        return router.decide("GET", "/api/accounts", f"Bearer {token}", "127.0.0.1")

    within = decided(ttl_s=3000)
    assert within.ok, within.detail
    long_lived = decided(ttl_s=12 * 3600)
    assert (long_lived.status, long_lived.reason) == (401, "malformed")
    assert "max_token_lifetime_s = 3600" in long_lived.detail
    backdated = decided(ttl_s=600, iat=now - 7200)
    assert not backdated.ok and backdated.reason == "malformed"
