"""The revocation log on its own: what it folds, and that compacting it while other processes
append (a second `cellgate serve` on the same state directory, a worker appending a
revocation heard from Redis) loses no line."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from cellgate.state import RevocationLog

FOREVER_S = 4102444800


def _append_tokens(path: str, prefix: str, count: int) -> None:
    log = RevocationLog(Path(path))
    for n in range(count):
        entry = {"op": "revoke_token", "jti": f"{prefix}-{n}", "forget_after_s": FOREVER_S}
        assert log.append(entry)


def test_the_log_folds_to_what_still_revokes(tmp_path: Path):
    log = RevocationLog(tmp_path / "revocations.jsonl")
    now = time.time()
    assert log.entries(now, None) == []
    assert log.extend(
        [
            {"op": "revoke_token", "jti": "a", "forget_after_s": int(now) + 60},
            {"op": "revoke_token", "jti": "a", "forget_after_s": int(now) + 600},
            {"op": "revoke_token", "jti": "gone", "forget_after_s": int(now) - 1},
            {"op": "revoke_customer", "customer_id": "c1", "issued_before_s": now - 10},
            {"op": "revoke_customer", "customer_id": "c1", "issued_before_s": now - 20},
            {"op": "revoke_customer", "customer_id": "lifted", "issued_before_s": now},
            {"op": "lift_customer", "customer_id": "lifted"},
            {"op": "revoke_customer", "customer_id": "old", "issued_before_s": now - 7200},
        ]
    )
    with open(log.path, "ab") as torn:
        torn.write(b'{"op": "revoke_token", "jti": "cut sh')
    kept = log.entries(now, max_token_lifetime_s=3600)
    assert kept == [
        {"op": "revoke_token", "jti": "a", "forget_after_s": int(now) + 600},
        {"op": "revoke_customer", "customer_id": "c1", "issued_before_s": now - 10},
    ]
    assert log.compact(now, 3600) == kept
    assert log.entries(now, 3600) == kept
    assert len(log.path.read_bytes().splitlines()) == 2


def test_compacting_while_others_append_loses_no_revocation(tmp_path: Path):
    path = tmp_path / "revocations.jsonl"
    log = RevocationLog(path)
    context = multiprocessing.get_context("spawn")
    appenders = [
        context.Process(target=_append_tokens, args=(str(path), f"p{i}", 300)) for i in range(2)
    ]
    for appender in appenders:
        appender.start()
    compactions = 0
    while any(appender.is_alive() for appender in appenders) or compactions < 5:
        log.compact(time.time(), None)
        compactions += 1
    for appender in appenders:
        appender.join()
        assert appender.exitcode == 0
    revoked = {entry["jti"] for entry in log.entries(time.time(), None)}
    expected = {f"p{i}-{n}" for i in range(2) for n in range(300)}
    assert revoked == expected, f"{len(expected - revoked)} lost over {compactions} compactions"
