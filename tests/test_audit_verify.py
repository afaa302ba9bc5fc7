"""``cellgate audit verify``: the tamper suite (each kind of break named with its file and line),
an intact trail, records not yet covered, retention, and a recovered crash."""

from __future__ import annotations

import base64
import hashlib
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from cellgate.audit.verify import Break, TrailReport, verify_trail
from cellgate.reference.audit_trail import (
    ChainWriter,
    SteppingClock,
    key_id,
    public_key_pem,
    sample_request,
    write_sample_trail,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
T0 = 1_796_160_000_000_000


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three chains of 120 records, about six segments each, a digest every 10 records; chain 2
    is left as a killed writer leaves it (its last records not yet covered)."""
    directory = tmp_path_factory.mktemp("template") / "trail"
    write_sample_trail(directory, KEY, chains=3, records_per_chain=120, left_open=[2])
    return directory


@pytest.fixture
def trail(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the template trail to tamper with."""
    return Path(shutil.copytree(template, tmp_path / "trail"))


def segments(trail: Path, chain: int) -> list[Path]:
    return sorted((trail / f"chain-{chain}").glob("0*.jsonl"))


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def verify(trail: Path, key: Ed25519PrivateKey = KEY) -> TrailReport:
    return verify_trail(trail, key.public_key())


def first_break(trail: Path) -> Break:
    report = verify(trail)
    assert report.broken is not None, "verify found no break"
    return report.broken


def assert_break(trail: Path, kind: str, path: Path, line: int | None) -> Break:
    found = first_break(trail)
    assert (found.kind, found.path, found.line) == (kind, path, line), str(found)
    return found


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "audit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def resign(line: bytes, key: Ed25519PrivateKey, claimed_key_id: str | None = None) -> bytes:
    """``line`` (a digest entry, perhaps changed) signed again by ``key``."""
    entry = orjson.loads(line)
    del entry["signature"]
    entry["key_id"] = claimed_key_id or key_id(key.public_key())
    signed = orjson.dumps(entry)
    signature = base64.b64encode(key.sign(signed))
    return signed[:-1] + b',"signature":"' + signature + b'"}'


# -- intact ---------------------------------------------------------------------------------------


def test_an_intact_trail_passes_with_its_counts(trail: Path) -> None:
    report = verify(trail)
    assert report.ok, str(report.broken)
    assert len(report.chains) == 3
    assert report.total("records") == 360
    assert report.total("segments") == sum(len(segments(trail, c)) for c in range(3))
    assert report.total("digests") == sum(
        len(read_lines(trail / f"chain-{c}" / "digests.jsonl")) for c in range(3)
    )
    assert [c.uncovered for c in report.chains[:2]] == [0, 0]
    killed = report.chains[2]
    assert 0 < killed.uncovered < 10
    assert killed.uncovered_from_seq == 121 - killed.uncovered


def test_the_cli_prints_a_summary_and_warns_of_a_self_attested_key(trail: Path) -> None:
    done = cli("verify", trail)
    assert done.returncode == 0, done.stdout + done.stderr
    uncovered = verify(trail).chains[2].uncovered
    assert f"{trail}: intact: 3 chains," in done.stdout
    assert "360 records" in done.stdout
    assert (
        f"not yet covered by a digest: {uncovered} records "
        f"(chain-2: seq {121 - uncovered}-120)" in done.stdout
    )
    assert "self-attested" in done.stderr
    key = trail.parent / "given.pub"
    key.write_bytes(public_key_pem(KEY.public_key()))
    done = cli("verify", trail, "--public-key", key, "--progress")
    assert done.returncode == 0
    assert "self-attested" not in done.stderr
    assert "verifying:" in done.stderr


# -- the tamper suite -----------------------------------------------------------------------------


def test_a_modified_field_is_named_at_its_line(trail: Path) -> None:
    path = segments(trail, 1)[1]
    lines = read_lines(path)
    assert b'"status":' in lines[4]
    record = orjson.loads(lines[4])
    record["status"] = 200 if record["status"] != 200 else 500
    lines[4] = orjson.dumps(record)
    write_lines(path, lines)
    assert_break(trail, "modified", path, 5)
    done = cli("verify", trail)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [str(first_break(trail))]
    assert done.stdout.startswith(f"{path}:5: modified: ")


def test_a_modified_last_record_of_a_segment_is_caught_by_its_digest(trail: Path) -> None:
    path = segments(trail, 0)[2]
    lines = read_lines(path)
    lines[-1] = lines[-1].replace(b'"latency_us":', b'"latency_us":1')
    write_lines(path, lines)
    assert_break(trail, "modified", path, len(lines))


def test_a_modified_prev_is_named_at_its_own_line(trail: Path) -> None:
    path = segments(trail, 0)[1]
    lines = read_lines(path)
    record = orjson.loads(lines[3])
    record["prev"] = "f" * 64
    lines[3] = orjson.dumps(record)
    write_lines(path, lines)
    assert_break(trail, "modified", path, 4)


def test_a_damaged_line_is_modified(trail: Path) -> None:
    path = segments(trail, 2)[0]
    lines = read_lines(path)
    lines[2] = lines[2][:40] + b"\x00garbage" + lines[2][48:]
    write_lines(path, lines)
    assert_break(trail, "modified", path, 3)


def test_a_deleted_line(trail: Path) -> None:
    path = segments(trail, 0)[2]
    lines = read_lines(path)
    seq = orjson.loads(lines[5])["seq"]
    del lines[5]
    write_lines(path, lines)
    found = assert_break(trail, "deleted", path, 6)
    assert found.detail == f"record {seq} missing: this line is seq {seq + 1}"
    done = cli("verify", trail)
    assert (done.returncode, done.stdout.strip()) == (1, str(found))


def test_a_deleted_first_line_of_a_segment(trail: Path) -> None:
    path = segments(trail, 1)[3]
    lines = read_lines(path)
    write_lines(path, lines[1:])
    assert_break(trail, "deleted", path, 1)


def test_an_inserted_copy_of_an_earlier_line(trail: Path) -> None:
    path = segments(trail, 0)[1]
    lines = read_lines(path)
    lines.insert(7, lines[1])
    write_lines(path, lines)
    assert_break(trail, "inserted", path, 8)


def test_an_inserted_duplicate(trail: Path) -> None:
    path = segments(trail, 1)[2]
    lines = read_lines(path)
    lines.insert(4, lines[3])
    write_lines(path, lines)
    assert_break(trail, "inserted", path, 5)


def test_an_inserted_forgery_that_links_to_the_line_before(trail: Path) -> None:
    """The forger gives the new line the next seq and the right prev; the genuine line with
    that seq follows it, and the chain goes on from the genuine one."""
    path = segments(trail, 0)[3]
    lines = read_lines(path)
    genuine = orjson.loads(lines[6])
    forged = {**genuine, "customer": "c-forged", "status": 200}
    lines.insert(6, orjson.dumps(forged))
    write_lines(path, lines)
    assert_break(trail, "inserted", path, 7)


def test_an_inserted_line_of_another_chain(trail: Path) -> None:
    path = segments(trail, 1)[1]
    lines = read_lines(path)
    lines.insert(2, read_lines(segments(trail, 0)[1])[2])
    write_lines(path, lines)
    assert_break(trail, "inserted", path, 3)


def test_two_swapped_lines_are_reordered(trail: Path) -> None:
    path = segments(trail, 2)[1]
    lines = read_lines(path)
    lines[3], lines[4] = lines[4], lines[3]
    write_lines(path, lines)
    found = assert_break(trail, "reordered", path, 4)
    done = cli("verify", trail)
    assert (done.returncode, done.stdout.strip()) == (1, str(found))


def test_a_segment_truncated_inside_a_line(trail: Path) -> None:
    path = segments(trail, 0)[1]
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    assert_break(trail, "truncated", path, len(data.splitlines()))


def test_a_segment_truncated_at_a_line_boundary(trail: Path) -> None:
    path = segments(trail, 1)[0]
    lines = read_lines(path)
    write_lines(path, lines[:-2])
    assert_break(trail, "truncated", path, len(lines) - 1)


def test_a_deleted_segment_is_missing(trail: Path) -> None:
    path = segments(trail, 1)[2]
    path.unlink()
    found = assert_break(trail, "segment_missing", path, None)
    assert "removed by no retention entry" in found.detail
    done = cli("verify", trail)
    assert done.returncode == 1
    assert done.stdout.strip() == f"{path}: segment_missing: {found.detail}"


def test_a_deleted_oldest_segment_is_missing(trail: Path) -> None:
    path = segments(trail, 0)[0]
    path.unlink()
    assert_break(trail, "segment_missing", path, None)


def test_a_forged_digest(trail: Path) -> None:
    path = trail / "chain-1" / "digests.jsonl"
    lines = read_lines(path)
    lines[2] = lines[2].replace(b'"last_hash":"', b'"last_hash":"0', 1)[:-3] + b'=="}'
    write_lines(path, lines)
    assert_break(trail, "digest_forged", path, 3)


def test_a_digest_changed_after_signing(trail: Path) -> None:
    path = trail / "chain-0" / "digests.jsonl"
    lines = read_lines(path)
    lines[4] = lines[4].replace(b'"lost":0', b'"lost":1')
    write_lines(path, lines)
    found = assert_break(trail, "digest_forged", path, 5)
    done = cli("verify", trail)
    assert (done.returncode, done.stdout.strip()) == (1, str(found))


def test_a_digest_signed_with_another_key(trail: Path) -> None:
    path = trail / "chain-2" / "digests.jsonl"
    lines = read_lines(path)
    lines[1] = resign(lines[1], OTHER_KEY)
    write_lines(path, lines)
    found = assert_break(trail, "wrong_key", path, 2)
    assert key_id(OTHER_KEY.public_key()) in found.detail


def test_a_digest_signed_with_another_key_under_the_right_key_id(trail: Path) -> None:
    path = trail / "chain-2" / "digests.jsonl"
    lines = read_lines(path)
    lines[1] = resign(lines[1], OTHER_KEY, claimed_key_id=key_id(KEY.public_key()))
    write_lines(path, lines)
    assert_break(trail, "digest_forged", path, 2)


def test_a_trail_checked_against_another_key(trail: Path) -> None:
    report = verify(trail, OTHER_KEY)
    assert report.broken is not None
    assert (report.broken.kind, report.broken.line) == ("wrong_key", 1)
    key = trail.parent / "other.pub"
    key.write_bytes(public_key_pem(OTHER_KEY.public_key()))
    done = cli("verify", trail, "--public-key", key)
    assert done.returncode == 1
    assert f"{trail / 'chain-0' / 'digests.jsonl'}:1: wrong_key: " in done.stdout


def test_a_deleted_digest(trail: Path) -> None:
    path = trail / "chain-0" / "digests.jsonl"
    lines = read_lines(path)
    del lines[3]
    write_lines(path, lines)
    found = assert_break(trail, "deleted", path, 4)
    assert found.detail == "digest 4 missing: this line is digest 5"


def test_swapped_digests_are_reordered(trail: Path) -> None:
    path = trail / "chain-1" / "digests.jsonl"
    lines = read_lines(path)
    lines[5], lines[6] = lines[6], lines[5]
    write_lines(path, lines)
    assert_break(trail, "reordered", path, 6)


def test_a_digest_replayed_from_another_chain(trail: Path) -> None:
    path = trail / "chain-1" / "digests.jsonl"
    lines = read_lines(path)
    lines.insert(3, read_lines(trail / "chain-0" / "digests.jsonl")[3])
    write_lines(path, lines)
    assert_break(trail, "inserted", path, 4)


def test_digests_cut_short_leave_a_segment_unclosed(trail: Path) -> None:
    """Without its last digests, a segment followed by another has no final digest."""
    path = trail / "chain-0" / "digests.jsonl"
    write_lines(path, read_lines(path)[:1])
    found = assert_break(trail, "truncated", path, None)
    assert "has no final digest" in found.detail


def test_a_torn_last_digest_is_being_written_unless_it_closed_a_segment(trail: Path) -> None:
    """Like a torn last record: being written, or a crash not yet recovered, and no more than
    cutting whole entries off the end; but a segment followed by another needs its final."""
    path = trail / "chain-1" / "digests.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    report = verify(trail)
    assert report.ok, str(report.broken)
    assert report.chains[1].incomplete_digest == (path, len(data.splitlines()[-1]) - 29)
    done = cli("verify", trail)
    assert done.returncode == 0 and f"warning: {path}: the last" in done.stderr
    lines = data.splitlines()
    closing = max(i for i, x in enumerate(lines[:-1]) if b'"final":true' in x)
    path.write_bytes(b"".join(x + b"\n" for x in lines[:closing]) + lines[closing][:-30])
    found = assert_break(trail, "truncated", path, None)
    assert "has no final digest" in found.detail


def test_verify_while_the_trail_is_written(tmp_path: Path) -> None:
    """A live trail: segments rotating, digests and records being appended."""
    clock = SteppingClock(T0, 1_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=4_096, digest_every_records=5)
    writer.request(**sample_request(random.Random(0), 0))

    def write() -> None:
        rng = random.Random(1)
        for index in range(1, 1_500):
            writer.request(**sample_request(rng, index))
            if index % 10 == 0:
                time.sleep(0.001)

    thread = threading.Thread(target=write)
    thread.start()
    checked = 0
    try:
        while thread.is_alive() or not checked:
            report = verify(tmp_path)
            assert report.ok, str(report.broken)
            checked += 1
    finally:
        thread.join()
        writer.close()
    assert checked > 3
    assert verify(tmp_path).ok


def test_a_record_appended_after_a_final_digest_is_inserted(trail: Path) -> None:
    path = segments(trail, 0)[-1]
    lines = read_lines(path)
    write_lines(path, [*lines, lines[-1]])
    assert_break(trail, "inserted", path, len(lines) + 1)


# -- retention, crashes, lines being written ------------------------------------------------------


def test_segments_removed_by_retention_are_not_missing(tmp_path: Path) -> None:
    clock = SteppingClock(T0, 250_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=8_000, digest_every_records=7)
    rng = random.Random(3)
    for index in range(80):
        writer.request(**sample_request(rng, index))
    names = [p.name for p in segments(tmp_path, 0)]
    writer.remove_segments(names[:3])
    for index in range(80, 90):
        writer.request(**sample_request(rng, index))
    writer.close()
    report = verify(tmp_path)
    assert report.ok, str(report.broken)
    assert report.chains[0].removed_segments == 3
    assert report.chains[0].retention_entries == 1
    assert report.total("records") == 90 - (int(names[3][:12]) - 1)
    done = cli("verify", tmp_path)
    assert done.returncode == 0
    assert "1 retention entries (3 segments removed)" in done.stdout
    # The same segments deleted without the entry are missing; dropping the entry also breaks
    # the digests' chain, which is checked first.
    digests = tmp_path / "chain-0" / "digests.jsonl"
    lines = read_lines(digests)
    [entry_at] = [i for i, x in enumerate(lines) if b'"kind":"retention"' in x]
    write_lines(digests, lines[:entry_at] + lines[entry_at + 1 :])
    found = assert_break(tmp_path, "deleted", digests, entry_at + 1)
    assert found.detail == f"digest {entry_at + 1} missing: this line is digest {entry_at + 2}"


def test_a_recovered_crash_passes_and_reports_its_gap(tmp_path: Path) -> None:
    rng = random.Random(5)
    clock = SteppingClock(T0, 250_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, digest_every_records=10)
    for index in range(25):
        writer.request(**sample_request(rng, index))
    writer.crash()
    path = segments(tmp_path, 0)[-1]
    torn = b'{"v":1,"chain":0,"seq":26,"time":"2026-12-01T21:2'
    with open(path, "ab") as file:
        file.write(torn)
    assert verify(tmp_path).chains[0].incomplete_tail == (path, len(torn))
    writer = ChainWriter(tmp_path, 0, KEY, clock, digest_every_records=10)
    assert writer.gap == {"after_seq": 25, "torn_bytes": len(torn)}
    for index in range(25, 40):
        writer.request(**sample_request(rng, index))
    writer.close()
    report = verify(tmp_path)
    assert report.ok, str(report.broken)
    assert report.total("records") == 40
    [gap] = report.chains[0].gaps
    assert (gap.after_seq, gap.torn_bytes, gap.segment) == (25, len(torn), path.name)
    done = cli("verify", tmp_path)
    assert done.returncode == 0
    assert f"chain-0 resumed after seq 25 ({len(torn)} torn bytes at the end of {path.name})" in (
        done.stdout
    )
    # Bytes added after the torn line are not a torn line any more.
    with open(path, "ab") as file:
        file.write(b"x\n")
    assert_break(tmp_path, "inserted", path, 26)


def test_a_crash_before_a_segment_held_a_whole_record(tmp_path: Path) -> None:
    """The torn-only segment goes; the recovery digest closes the segment before it."""
    clock = SteppingClock(T0, 1_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=3_000)
    rng = random.Random(9)
    for index in range(8):
        writer.request(**sample_request(rng, index))
    writer.crash()
    torn_only = tmp_path / "chain-0" / "000000000009-20261201T21.jsonl"
    torn_only.write_bytes(b'{"v":1,"chain":0,"seq":9,"ti')
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=3_000)
    assert not torn_only.exists()
    assert writer.gap == {"after_seq": 8, "torn_bytes": 0}
    writer.request(**sample_request(rng, 8))
    writer.close()
    assert torn_only.exists()  # the new segment took the name
    report = verify(tmp_path)
    assert report.ok, str(report.broken)
    assert report.total("records") == 9


def test_a_torn_only_segment_kept_and_closed_by_its_recovery_digest_passes(tmp_path: Path) -> None:
    """What the Rust writer does after a crash before a segment's first line was whole: it keeps
    the segment and closes it with a digest covering nothing (gap: the torn bytes); the next
    segment, an hour later, starts with the same seq."""
    rng = random.Random(11)
    clock = SteppingClock(T0, 1_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=3_000)
    for index in range(8):
        writer.request(**sample_request(rng, index))
    writer.close()
    # A restarted writer opened the next segment and was killed inside its first line.
    chain = tmp_path / "chain-0"
    torn_only = chain / "000000000009-20261201T21.jsonl"
    torn = b'{"v":1,"chain":0,"seq":9,"ti'
    torn_only.write_bytes(torn)
    digests = chain / "digests.jsonl"
    lines = read_lines(digests)
    last = orjson.loads(lines[-1])
    recovery = {
        "v": 1, "chain": 0, "digest": last["digest"] + 1, "kind": "records",
        "time": "2026-12-01T21:30:00.000000Z",
        "prev_digest": hashlib.sha256(lines[-1]).hexdigest(), "segment": torn_only.name,
        "first_seq": None, "last_seq": None, "count": 0, "first_time": None, "last_time": None,
        "last_hash": None, "segment_bytes": 0, "segment_sha256": hashlib.sha256(b"").hexdigest(),
        "final": True, "lost": 0, "gap": {"after_seq": 8, "torn_bytes": len(torn)},
        "signature": "",
    }  # fmt: skip
    write_lines(digests, [*lines, resign(orjson.dumps(recovery), KEY)])
    clock.advance(3_600_000_000)
    writer = ChainWriter(tmp_path, 0, KEY, clock, rotate_bytes=3_000)
    assert writer.gap is None  # already recovered
    writer.request(**sample_request(rng, 8))
    writer.close()
    assert (chain / "000000000009-20261201T22.jsonl").exists()
    report = verify(tmp_path)
    assert report.ok, str(report.broken)
    assert report.total("records") == 9
    assert [(g.after_seq, g.torn_bytes) for g in report.chains[0].gaps] == [(8, len(torn))]


def test_a_line_being_written_in_the_newest_segment_is_not_a_break(trail: Path) -> None:
    path = segments(trail, 2)[-1]
    with open(path, "ab") as file:
        file.write(b'{"v":1,"chain":2,"seq":121,')
    report = verify(trail)
    assert report.ok
    assert report.chains[2].incomplete_tail == (path, 27)
    done = cli("verify", trail)
    assert done.returncode == 0
    assert "incomplete line" in done.stderr


# -- usage errors ---------------------------------------------------------------------------------


def test_usage_errors_exit_2_with_a_clear_message(trail: Path, tmp_path: Path) -> None:
    done = cli("verify", tmp_path / "nowhere")
    assert done.returncode == 2
    assert "nowhere: no such directory" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("verify", empty)
    assert (done.returncode, "not an audit trail" in done.stderr) == (2, True)
    done = cli("verify", trail, "--public-key", tmp_path / "missing.pub")
    assert done.returncode == 2
    assert "missing.pub: cannot read the public key" in done.stderr
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key\n")
    done = cli("verify", trail, "--public-key", garbage)
    assert (done.returncode, "not a PEM public key" in done.stderr) == (2, True)
    done = cli("verify")
    assert done.returncode == 2
    assert "DIR" in done.stderr
