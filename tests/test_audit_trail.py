"""The audit trail as the gateway writes it, against a real gateway and real cells: one record per
request and per admin action, chained and signed; nothing secret in it; strict answers only
after their record is durable; a worker killed mid-load loses no acknowledged record; a full
disk refuses (fail-closed) and recovers."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from audit_trails import audited_config, check_trail, records
from cellgate.demo.launch import demo_admin_token, demo_token
from harness import http_json, keep_requesting, start_gateway, to_demo_cell

TOKEN = demo_token("c-corp-us")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = {"Authorization": f"Bearer {demo_admin_token()}"}


def by_request_id(trail: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records(trail):
        if record["event"] == "request":
            found.setdefault(record["request_id"], []).append(record)
    return found


def test_every_request_and_admin_action_leaves_one_record(demo_config: Path, tmp_path: Path):
    config = audited_config(demo_config, tmp_path / "gw", 'durability = "strict"')
    gateway = start_gateway(config)
    body_marker = b'{"amount": 12.5, "memo": "body-must-not-be-recorded"}'
    sent = []
    try:
        sent.append(("forwarded", http_json(gateway.port, "GET", "/api/accounts", AUTH)))
        sent.append(("refused", http_json(gateway.port, "GET", "/api/accounts")))
        sent.append(("refused", http_json(gateway.port, "GET", "/api/a;b", AUTH)))
        headers = {**AUTH, "Content-Type": "application/json"}
        sent.append(
            ("forwarded", http_json(gateway.port, "POST", "/api/orders", headers, body_marker))
        )
        big = {**AUTH, "Content-Length": str(2 << 20)}
        sent.append(("refused", http_json(gateway.port, "POST", "/api/orders", big, b"x")))
        revoke = b'{"jti": "jti-to-revoke", "forget_after_s": 4102444800}'
        assert http_json(gateway.port, "POST", "/_cellgate/revocations", ADMIN, revoke)[0] == 200
        status, _, audit = http_json(gateway.port, "GET", "/_cellgate/audit", ADMIN)
        assert status == 200 and audit["audit"]["state"] == "healthy"
    finally:
        assert gateway.stop() == 0
    trail = tmp_path / "gw" / "trail"
    found = by_request_id(trail)
    for outcome, (status, headers, _) in sent:
        request_id = headers["x-request-id"]
        assert len(found[request_id]) == 1, request_id
        record = found[request_id][0]
        assert (record["status"], record["outcome"]) == (status, outcome), record
    first = found[sent[0][1][1]["x-request-id"]][0]
    assert first["customer"] == "c-corp-us" and first["path"] == "/api/accounts"
    assert first["tier"] and first["region"] and first["cell"] and first["encryption"]
    assert first["client"] == "127.0.0.1" and len(first["trace_id"]) == 32
    assert any(cell == first["cell"] and why is None for cell, why in first["cells"])
    assert found[sent[1][1][1]["x-request-id"]][0]["reason"] == "missing_token"
    assert found[sent[2][1][1]["x-request-id"]][0]["reason"] == "bad_path"
    assert found[sent[4][1][1]["x-request-id"]][0]["reason"] == "body_too_large"
    admin = [r for r in records(trail) if r["event"] == "admin"]
    assert [(a["action"], a["target"], a["status"]) for a in admin] == [
        ("revoke_token", {"jti": "jti-to-revoke"}, 200)
    ]
    counts = check_trail(trail)
    assert counts["records"] == len(sent) + 1 and counts["gaps"] == 0
    last = (trail / "chain-0" / "digests.jsonl").read_text().splitlines()[-1]
    assert '"final":true' in last
    # Nothing secret or private went in: no token, no body, no key.
    key_body = (tmp_path / "gw" / "audit.pem").read_text().splitlines()[1]
    for path in trail.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            for secret in (TOKEN, demo_admin_token(), "body-must-not-be-recorded", key_body):
                assert secret.encode() not in text, (path, secret[:20])


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 1000\r\n\r\n" + b'{"amount": 1',
        b"Transfer-Encoding: chunked\r\n\r\n" + b'c\r\n{"amount": 1\r\n',
    ],
    ids=["content-length", "chunked"],
)
def test_a_client_that_leaves_mid_body_still_leaves_its_record_and_nothing_is_forwarded(
    demo_config: Path, tmp_path: Path, framing: bytes
):
    # A body cut short is not the request the client meant (a payment's amount cut at 1): it
    # must not reach the cell, and the request must still be on the record.
    config = audited_config(demo_config, tmp_path / "gw", 'durability = "strict"')
    gateway = start_gateway(config)
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as client:
            client.sendall(
                b"POST /api/orders/left-mid-body HTTP/1.1\r\nHost: gw\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + framing
            )
            time.sleep(0.3)
        # What came after still answers, and the one who left is on the record.
        assert http_json(gateway.port, "GET", "/api/accounts", AUTH)[0] == 200
    finally:
        assert gateway.stop() == 0
    trail = tmp_path / "gw" / "trail"
    left = [r for r in records(trail) if r.get("path") == "/api/orders/left-mid-body"]
    assert len(left) == 1, left
    assert (left[0]["reason"], left[0]["customer"]) == ("body_incomplete", "c-corp-us")
    assert (left[0]["outcome"], left[0]["status"]) == ("refused", 400)
    assert left[0].get("cell") is None and left[0]["cell_status"] is None
    assert check_trail(trail)["gaps"] == 0


def test_a_client_that_leaves_while_its_cell_answers_is_recorded_cancelled_with_the_cell(
    demo_config: Path, tmp_path: Path, demo_cells_running
):
    config = audited_config(demo_config, tmp_path / "gw", 'durability = "strict"')
    gateway = start_gateway(config)
    assert (
        to_demo_cell(demo_cells_running, "corp-us-east-1", "POST", "/_cell/slow?ms=1500")[0] == 200
    )
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as client:
            client.sendall(
                b"GET /api/accounts/left-waiting HTTP/1.1\r\nHost: gw\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
            time.sleep(0.5)
        time.sleep(0.5)  # the next sweep finds the client gone and cancels the forward
    finally:
        to_demo_cell(demo_cells_running, "corp-us-east-1", "POST", "/_cell/reset")
        assert gateway.stop() == 0
    trail = tmp_path / "gw" / "trail"
    left = [r for r in records(trail) if r.get("path") == "/api/accounts/left-waiting"]
    assert len(left) == 1, left
    assert (left[0]["outcome"], left[0]["reason"]) == ("cancelled", "client_disconnected")
    assert left[0]["cell"] == "corp-us-east-1", "it was on its way to its cell"


def test_buffered_records_reach_disk_in_time_with_hashed_client(demo_config: Path, tmp_path: Path):
    key = "k" * 40
    os.environ["CELLGATE_TEST_AUDIT_HASH_KEY"] = key
    audit = (
        'durability = "buffered"\nflush_interval_ms = 100\nclient_address = "hash"\n'
        'user_agent = "drop"\nhash_key_env = "CELLGATE_TEST_AUDIT_HASH_KEY"'
    )
    gateway = start_gateway(audited_config(demo_config, tmp_path / "gw", audit))
    try:
        headers = {**AUTH, "User-Agent": "agent-must-not-be-recorded"}
        request_id = http_json(gateway.port, "GET", "/api/accounts", headers)[1]["x-request-id"]
        deadline = time.monotonic() + 5
        while request_id not in by_request_id(tmp_path / "gw" / "trail"):
            assert time.monotonic() < deadline, "the record did not reach disk in 5 s"
            time.sleep(0.05)
    finally:
        assert gateway.stop() == 0
    record = by_request_id(tmp_path / "gw" / "trail")[request_id][0]
    expected = hmac.new(key.encode(), b"127.0.0.1", hashlib.sha256).hexdigest()
    assert record["client"] == f"hmac-sha256:{expected}"
    assert record["user_agent"] is None
    check_trail(tmp_path / "gw" / "trail")


def test_a_worker_killed_under_load_loses_no_acknowledged_record(demo_config: Path, tmp_path: Path):
    gateway = start_gateway(audited_config(demo_config, tmp_path / "gw", 'durability = "strict"'))
    stop, ok, failed = threading.Event(), [], []
    clients = [
        threading.Thread(target=keep_requesting, args=(gateway.port, AUTH, stop, ok, failed))
        for _ in range(4)
    ]
    try:
        for client in clients:
            client.start()
        time.sleep(1.5)
        (worker,) = gateway.workers()
        os.kill(worker, signal.SIGKILL)
        # granian replaces the worker; it takes the chain over and resumes it.
        deadline = time.monotonic() + 20
        before = len(ok)
        while len(ok) < before + 50:
            assert time.monotonic() < deadline, "no worker served after the kill"
            time.sleep(0.1)
        stop.set()
        for client in clients:
            client.join()
    finally:
        stop.set()
        assert gateway.stop() == 0
    trail = tmp_path / "gw" / "trail"
    found = by_request_id(trail)
    missing = [request_id for request_id in ok if request_id not in found]
    assert not missing, f"{len(missing)} of {len(ok)} acknowledged requests have no record"
    counts = check_trail(trail)
    assert counts["gaps"] == 1, counts
    assert len(list((trail / "chain-0").glob("*-*.jsonl"))) >= 2


def _fill(directory: Path) -> Path:
    """Fills the file system of ``directory`` with a file, until it has no space left."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    return done.returncode == 0


def test_a_full_disk_refuses_and_recovers_losing_nothing_acknowledged(
    demo_config: Path, tmp_path: Path
):
    trail = tmp_path / "gw" / "trail"
    if not _mount_tmpfs(trail, "1m"):
        pytest.skip("a tmpfs cannot be mounted here (needs root and mount)")
    try:
        audit = 'durability = "strict"\nrotate_bytes = 65536'
        gateway = start_gateway(audited_config(demo_config, tmp_path / "gw", audit))
        acknowledged = []
        try:
            for _ in range(5):
                status, headers, _ = http_json(gateway.port, "GET", "/api/accounts", AUTH)
                assert status == 200
                acknowledged.append(headers["x-request-id"])
            filler = _fill(trail)
            statuses = []
            for _ in range(20):
                status, headers, body = http_json(gateway.port, "GET", "/api/accounts", AUTH)
                statuses.append(status)
                if status == 200:
                    acknowledged.append(headers["x-request-id"])
                else:
                    assert (status, body["reason"]) == (503, "audit_unavailable")
            assert statuses.count(503) >= 19, statuses
            filler.unlink()
            deadline = time.monotonic() + 10
            while True:
                status, headers, _ = http_json(gateway.port, "GET", "/api/accounts", AUTH)
                if status == 200:
                    acknowledged.append(headers["x-request-id"])
                    break
                assert time.monotonic() < deadline, "the trail did not recover"
                time.sleep(0.2)
        finally:
            assert gateway.stop() == 0
        found = by_request_id(trail)
        assert all(request_id in found for request_id in acknowledged)
        check_trail(trail)
    finally:
        subprocess.run(["umount", "-l", str(trail)])


def test_retention_removes_old_segments_after_saying_so_and_verify_still_passes(
    demo_config: Path, tmp_path: Path
):
    audit = 'durability = "buffered"\nrotate_bytes = 4096\nretention_bytes = 12000'
    gateway = start_gateway(audited_config(demo_config, tmp_path / "gw", audit))
    try:
        for _ in range(60):
            assert http_json(gateway.port, "GET", "/api/accounts", AUTH)[0] == 200
    finally:
        assert gateway.stop() == 0
    chain = tmp_path / "gw" / "trail" / "chain-0"
    entries = [json.loads(line) for line in (chain / "digests.jsonl").read_text().splitlines()]
    removed = [name for e in entries if e["kind"] == "retention" for name in e["removed"]]
    assert removed and not any((chain / name).exists() for name in removed)
    assert sum(p.stat().st_size for p in chain.glob("*-*.jsonl")) <= 12000 + 4096
    verified = subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "audit", "verify", str(tmp_path / "gw" / "trail")],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_fail_open_serves_through_a_full_disk_and_reports_what_it_lost(
    demo_config: Path, tmp_path: Path
):
    trail = tmp_path / "gw" / "trail"
    if not _mount_tmpfs(trail, "1m"):
        pytest.skip("a tmpfs cannot be mounted here (needs root and mount)")
    try:
        audit = (
            'durability = "buffered"\non_failure = "fail_open"\nqueue_records = 4\n'
            "digest_every_s = 1\nflush_interval_ms = 50"
        )
        gateway = start_gateway(audited_config(demo_config, tmp_path / "gw", audit))
        try:
            assert http_json(gateway.port, "GET", "/api/accounts", AUTH)[0] == 200
            time.sleep(0.3)
            filler = _fill(trail)
            statuses = [http_json(gateway.port, "GET", "/api/accounts", AUTH)[0] for _ in range(30)]
            assert statuses == [200] * 30
            filler.unlink()
            time.sleep(2.5)
        finally:
            assert gateway.stop() == 0
        digests = (trail / "chain-0" / "digests.jsonl").read_text().splitlines()
        lost = sum(json.loads(line).get("lost", 0) for line in digests)
        written = [r for r in records(trail) if r["event"] == "request"]
        assert lost > 0 and lost + len(written) == 31, (lost, len(written))
        check_trail(trail)
    finally:
        subprocess.run(["umount", "-l", str(trail)])


def _chains_written(trail: Path) -> set[str]:
    """The chains that hold at least one record."""
    return {
        chain.name
        for chain in trail.glob("chain-*")
        if any(segment.stat().st_size > 0 for segment in chain.glob("*-*.jsonl"))
    }


def test_two_workers_write_two_chains_and_query_finds_exactly_a_customers_records(
    demo_config: Path, tmp_path: Path
):
    config = audited_config(demo_config, tmp_path / "gw", 'durability = "strict"')
    gateway = start_gateway(config, "--workers", "2")
    eu = {"Authorization": f"Bearer {demo_token('c-retail-eu')}"}
    trail = tmp_path / "gw" / "trail"
    mine = set()
    try:
        # A worker still starting takes no connection, so send until both have written
        # (a strict trail holds a request's record before its answer leaves).
        deadline = time.monotonic() + 30
        sent = 0
        while sent < 40 or (len(_chains_written(trail)) < 2 and time.monotonic() < deadline):
            headers = eu if sent % 3 == 0 else AUTH
            status, answered, _ = http_json(gateway.port, "GET", "/api/accounts", headers)
            assert status == 200
            if headers is eu:
                mine.add(answered["x-request-id"])
            sent += 1
    finally:
        assert gateway.stop() == 0
    chains = {r["chain"] for r in records(trail)}
    assert chains == {0, 1}, "each worker keeps its own chain"
    check_trail(trail)
    query = ["audit", "query", str(trail), "--customer", "c-retail-eu"]
    queried = subprocess.run(
        [sys.executable, "-m", "cellgate.cli", *query],
        capture_output=True,
        text=True,
        check=True,
    )
    found = [json.loads(line) for line in queried.stdout.splitlines()]
    assert {r["request_id"] for r in found} == mine
    assert [r["time"] for r in found] == sorted(r["time"] for r in found)
