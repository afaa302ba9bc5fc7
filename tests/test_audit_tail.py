"""``cellgate audit tail``: the last N records across chains in time order, and ``-f``
following records as they are appended, into new segments and new chains."""

from __future__ import annotations

import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from cellgate.audit.tail import Follower, last_records
from cellgate.reference.audit_trail import (
    ChainWriter,
    SteppingClock,
    sample_request,
    write_sample_trail,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.from_private_bytes(b"\x03" * 32)
T0 = 1_796_160_000_000_000


def in_time_order(lines: list[bytes]) -> list[bytes]:
    keyed = [(orjson.loads(x), x) for x in lines]
    return [x for r, x in sorted(keyed, key=lambda p: (p[0]["time"], p[0]["chain"], p[0]["seq"]))]


@pytest.fixture
def trail(tmp_path: Path) -> tuple[Path, list[bytes]]:
    directory = tmp_path / "trail"
    lines = write_sample_trail(
        directory, KEY, chains=3, records_per_chain=40, rotate_bytes=6_000, left_open=[1]
    )
    return directory, in_time_order([x for chain in lines.values() for x in chain])


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "audit", "tail", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("count", [0, 1, 10, 45, 500])
def test_the_last_n_across_chains(trail: tuple[Path, list[bytes]], count: int) -> None:
    directory, lines = trail
    expected = lines[-count:] if count else []
    assert [m.line for m in last_records(directory, count)] == expected


def test_the_cli_prints_the_last_ten_by_default(trail: tuple[Path, list[bytes]]) -> None:
    directory, lines = trail
    done = cli(directory)
    assert done.returncode == 0, done.stderr
    assert done.stdout.encode().splitlines() == lines[-10:]
    done = cli(directory, "-n", "3", "--format", "table")
    header, *rows = done.stdout.splitlines()
    assert header.startswith("TIME") and len(rows) == 3
    assert [row.split()[0] for row in rows] == [orjson.loads(x)["time"] for x in lines[-3:]]
    done = cli(directory, "-n", "-1")
    assert done.returncode == 2 and "-1 is negative" in done.stderr


def test_a_torn_last_line_is_not_shown(trail: tuple[Path, list[bytes]]) -> None:
    directory, lines = trail
    newest = sorted((directory / "chain-1").glob("0*.jsonl"))[-1]
    with open(newest, "ab") as file:
        file.write(b'{"v":1,"chain":1,"seq":41,"time":"2026')
    assert [m.line for m in last_records(directory, 5)] == lines[-5:]


def test_the_follower_sees_new_records_segments_and_chains(
    trail: tuple[Path, list[bytes]],
) -> None:
    directory, lines = trail
    follower = Follower(directory)
    assert [m.line for m in follower.last(4)] == lines[-4:]
    assert follower.poll() == []
    rng = random.Random(1)
    clock = SteppingClock(T0 + 3_600_000_000, 1_000)
    restarted = ChainWriter(directory, 0, KEY, clock, rotate_bytes=2_000)
    new_chain = ChainWriter(directory, 7, KEY, clock)
    written = [restarted.request(**sample_request(rng, i)) for i in range(6)]
    written.append(new_chain.request(**sample_request(rng, 99)))
    partial = sorted((directory / "chain-0").glob("0*.jsonl"))[-1]
    restarted.crash()
    with open(partial, "ab") as file:
        file.write(b'{"v":1,"chain":0,"seq":')
    assert [m.line for m in follower.poll()] == in_time_order(written)
    assert follower.poll() == []
    new_chain.close()


def test_tail_f_follows_until_ctrl_c(trail: tuple[Path, list[bytes]]) -> None:
    directory, lines = trail
    command = [sys.executable, "-m", "cellgate.cli", "audit", "tail", str(directory)]
    with subprocess.Popen(
        [*command, "-f", "-n", "2", "--poll-s", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        out: queue.Queue[bytes] = queue.Queue()
        stdout = process.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: [out.put(x) for x in stdout], daemon=True)
        reader.start()

        def read(count: int) -> list[bytes]:
            got = []
            deadline = time.monotonic() + 20
            while len(got) < count and time.monotonic() < deadline:
                try:
                    got.append(out.get(timeout=0.5).rstrip(b"\n"))
                except queue.Empty:
                    continue
            return got

        try:
            assert read(2) == lines[-2:]
            rng = random.Random(2)
            clock = SteppingClock(T0 + 7_200_000_000, 1_000)
            restarted = ChainWriter(directory, 2, KEY, clock, rotate_bytes=1_500)
            fresh = ChainWriter(directory, 3, KEY, clock)
            written = []
            for index in range(8):
                writer = fresh if index % 4 == 3 else restarted
                written.append(writer.request(**sample_request(rng, index)))
                time.sleep(0.02)
            restarted.close()
            fresh.close()
            assert read(len(written)) == written
            assert len(list((directory / "chain-2").glob("0*-*T23.jsonl"))) > 1  # new segments
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=20)
            reader.join(timeout=5)
        assert code == 0
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
