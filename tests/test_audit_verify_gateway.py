"""The audit tools on a trail the gateway itself wrote (the Rust writer, ``rust/audit/``): verify
passes it, through a worker killed mid-load and its successor's recovery; query and tail find
its records; a record changed on disk is named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from audit_trails import audited_config
from cellgate.demo.launch import demo_token
from cryptography.hazmat.primitives import serialization
from harness import http_json, keep_requesting, start_gateway

AUTH = {"Authorization": f"Bearer {demo_token('c-corp-us')}"}


def audit(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def public_key_of(private_pem: Path, out: Path) -> Path:
    """The auditor's copy of the key: derived from the signing key, not read from the trail."""
    key = serialization.load_pem_private_key(private_pem.read_bytes(), None)
    out.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return out


@pytest.mark.timeout(180)
def test_the_tools_read_what_the_gateway_wrote(demo_config: Path, tmp_path: Path) -> None:
    settings = 'durability = "strict"\nrotate_bytes = 4096\ndigest_every_records = 25'
    config = audited_config(demo_config, tmp_path / "gw", settings)
    gateway = start_gateway(config)
    stop, ok = threading.Event(), []
    clients = [
        threading.Thread(target=keep_requesting, args=(gateway.port, AUTH, stop, ok))
        for _ in range(3)
    ]
    try:
        assert http_json(gateway.port, "GET", "/api/accounts")[0] == 401
        for client in clients:
            client.start()
        time.sleep(1.0)
        (worker,) = gateway.workers()
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 20
        before = len(ok)
        while len(ok) < before + 30:
            assert time.monotonic() < deadline, "no worker served after the kill"
            time.sleep(0.1)
    finally:
        stop.set()
        for client in clients:
            client.join()
        assert gateway.stop() == 0
    trail = tmp_path / "gw" / "trail"
    key = public_key_of(tmp_path / "gw" / "audit.pem", tmp_path / "auditor.pub")

    done = audit("verify", trail, "--public-key", key)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact:" in done.stdout
    # The successor closes what the killed worker left open (unless the kill fell between a
    # segment's final digest and the next record): each recovery is reported.
    recoveries = sum(
        1
        for line in (trail / "chain-0" / "digests.jsonl").read_bytes().splitlines()
        if orjson.loads(line).get("gap") is not None
    )
    assert done.stdout.count("crash recovered: chain-0 resumed after seq") == recoveries

    done = audit("query", trail, "--customer", "c-corp-us", "--outcome", "forwarded")
    assert done.returncode == 0, done.stderr
    found = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert set(ok) <= {r["request_id"] for r in found}
    assert [r["time"] for r in found] == sorted(r["time"] for r in found)
    done = audit("query", trail, "--reason", "missing_token", "--format", "table")
    assert len(done.stdout.splitlines()) == 2 and "missing_token" in done.stdout

    done = audit("tail", trail, "-n", "5")
    tail = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [r["request_id"] for r in tail] == [r["request_id"] for r in found[-5:]]

    segments = sorted((trail / "chain-0").glob("0*.jsonl"))
    assert len(segments) > 2
    path = segments[1]
    lines = path.read_bytes().splitlines()
    lines[1] = lines[1].replace(b'"status":200', b'"status":201')
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    done = audit("verify", trail, "--public-key", key)
    assert done.returncode == 1
    assert done.stdout.startswith(f"{path}:2: modified: ")
