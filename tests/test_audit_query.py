"""``cellgate audit query``: exactly the records that match every filter, across chains and
segments, in time order, against a brute-force filter of what the writer wrote."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from cellgate.audit.layout import parse_time
from cellgate.audit.query import Filters, query
from cellgate.reference.audit_trail import SteppingClock, write_sample_trail
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.from_private_bytes(b"\x05" * 32)
T0 = 1_796_160_000_000_000  # 2026-12-01T21:20:00Z

Record = dict[str, Any]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """Four chains taking turns on one clock 30 s apart (600 records over five hours: segments
    rotate by hour and by size), every 25th record an admin one; and every line written."""
    directory = tmp_path_factory.mktemp("query") / "trail"
    lines = write_sample_trail(
        directory,
        KEY,
        chains=4,
        records_per_chain=150,
        clock=SteppingClock(T0, 30_000_000),
        rotate_bytes=12_000,
        left_open=[3],
    )
    return directory, [line for chain in lines.values() for line in chain]


def brute_force(lines: list[bytes], keep: Callable[[Record], bool]) -> list[bytes]:
    """The lines whose record ``keep`` accepts, in time order (ties by chain, then seq)."""
    parsed = [(orjson.loads(line), line) for line in lines]
    chosen = [(r["time"], r["chain"], r["seq"], line) for r, line in parsed if keep(r)]
    return [line for *_, line in sorted(chosen)]


def about_customer(customer: str) -> Callable[[Record], bool]:
    return lambda r: (
        r.get("customer") == customer
        or (r["event"] == "admin" and r["target"].get("customer") == customer)
    )


SINCE = "2026-12-01T22:47:10Z"
UNTIL = "2026-12-02T00:03:00Z"

CASES: list[tuple[str, dict[str, str], Callable[[Record], bool]]] = [
    ("everything", {}, lambda r: True),
    ("customer", {"customer": "c-0007"}, about_customer("c-0007")),
    (
        "customer and outcome",
        {"customer": "c-0012", "outcome": "refused"},
        lambda r: about_customer("c-0012")(r) and r.get("outcome") == "refused",
    ),
    (
        "since and until",
        {"since": SINCE, "until": UNTIL},
        lambda r: parse_time(SINCE) <= r["time"] < parse_time(UNTIL),
    ),
    ("since", {"since": SINCE}, lambda r: r["time"] >= parse_time(SINCE)),
    ("until", {"until": UNTIL}, lambda r: r["time"] < parse_time(UNTIL)),
    ("admin", {"event": "admin"}, lambda r: r["event"] == "admin"),
    ("request", {"event": "request"}, lambda r: r["event"] == "request"),
    ("reason", {"reason": "rate_limited"}, lambda r: r.get("reason") == "rate_limited"),
    ("cell", {"cell": "retail-us-east-2"}, lambda r: r.get("cell") == "retail-us-east-2"),
    ("outcome", {"outcome": "cancelled"}, lambda r: r.get("outcome") == "cancelled"),
    ("admin actions taken", {"outcome": "applied"}, lambda r: r.get("outcome") == "applied"),
    (
        "cell, reason and a time window",
        {"cell": "corp-us-east-1", "reason": "cell_timeout", "since": SINCE},
        lambda r: (
            r.get("cell") == "corp-us-east-1"
            and r.get("reason") == "cell_timeout"
            and r["time"] >= parse_time(SINCE)
        ),
    ),
    ("nothing matches", {"customer": "c-nobody"}, lambda r: False),
]


@pytest.mark.parametrize(("filters", "keep"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_query_matches_a_brute_force_filter(
    written: tuple[Path, list[bytes]], filters: dict[str, str], keep: Callable[[Record], bool]
) -> None:
    directory, lines = written
    times = {k: parse_time(v) for k, v in filters.items() if k in ("since", "until")}
    found = [m.line for m in query(directory, Filters(**(filters | times)))]
    expected = brute_force(lines, keep)
    assert found == expected
    if filters not in ({}, {"customer": "c-nobody"}):
        assert 0 < len(found) < len(lines)


def test_the_trail_spans_chains_hours_and_segments(written: tuple[Path, list[bytes]]) -> None:
    directory, lines = written
    names = sorted(p.name for p in directory.glob("chain-*/0*.jsonl"))
    assert len({name[13:24] for name in names}) >= 5  # hours
    assert len(names) > 4 * 5
    assert len(lines) == 600


@pytest.mark.parametrize("record_index", [0, 301, 599])
def test_by_request_id_and_trace_id(written: tuple[Path, list[bytes]], record_index: int) -> None:
    directory, lines = written
    record = orjson.loads(lines[record_index])
    if record["event"] == "admin":
        record = orjson.loads(lines[record_index - 1])
    [found] = list(query(directory, Filters(request_id=record["request_id"])))
    assert found.record == record
    if record["trace_id"] is not None:
        traced = list(query(directory, Filters(trace_id=record["trace_id"])))
        assert [m.record for m in traced] == [record]


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "audit", "query", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_streams_json_lines(written: tuple[Path, list[bytes]]) -> None:
    directory, lines = written
    done = cli(directory, "--customer", "c-0007", "--since", SINCE)
    assert done.returncode == 0, done.stderr
    expected = brute_force(
        lines, lambda r: about_customer("c-0007")(r) and r["time"] >= parse_time(SINCE)
    )
    assert done.stdout.encode().splitlines() == expected


def test_the_cli_prints_a_table(written: tuple[Path, list[bytes]]) -> None:
    directory, lines = written
    done = cli(directory, "--event", "admin", "--format", "table")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == [
        "TIME", "CHAIN:SEQ", "CUSTOMER", "METHOD", "PATH", "CELL", "STATUS", "OUTCOME", "REASON"
    ]  # fmt: skip
    expected = [orjson.loads(x) for x in brute_force(lines, lambda r: r["event"] == "admin")]
    assert len(rows) == len(expected) > 0
    for row, record in zip(rows, expected, strict=True):
        cells = row.split()
        assert cells[0] == record["time"]
        assert cells[1] == f"{record['chain']}:{record['seq']}"
        assert cells[2] == record["target"]["customer"]
        assert cells[3:5] == ["ADMIN", record["action"]]
    # Fixed width: every column starts where its title does.
    starts = [header.index(title) for title in ("CHAIN:SEQ", "CUSTOMER", "STATUS", "REASON")]
    for row in rows:
        assert all(row[start - 1] == " " != row[start] for start in starts)


def test_bad_input_is_a_usage_error(written: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    directory, _ = written
    done = cli(directory, "--since", "last tuesday")
    assert done.returncode == 2
    assert "'last tuesday' is not an ISO 8601 time" in done.stderr
    done = cli(directory, "--since", UNTIL, "--until", SINCE)
    assert (done.returncode, "--since must be before --until" in done.stderr) == (2, True)
    done = cli(directory, "--outcome", "maybe")
    assert done.returncode == 2 and "invalid choice" in done.stderr
    done = cli(tmp_path / "absent")
    assert done.returncode == 2 and "no such directory" in done.stderr


def test_lines_that_are_not_records_are_skipped_with_a_warning(tmp_path: Path) -> None:
    lines = write_sample_trail(tmp_path, KEY, chains=1, records_per_chain=30)[0]
    segment = sorted((tmp_path / "chain-0").glob("0*.jsonl"))[0]
    data = segment.read_bytes().splitlines()
    data[2] = b"not json"
    segment.write_bytes(b"\n".join(data) + b"\n" + b'{"v":1,"chain":0,"seq":99,"tim')
    done = cli(tmp_path)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == len(lines) - 1
    assert f"{segment}:3: lines that are not records were skipped" in done.stderr


def test_time_filters_accept_iso_8601_forms() -> None:
    assert parse_time("2026-12-01T21:00:00Z") == "2026-12-01T21:00:00.000000Z"
    assert parse_time("2026-12-01") == "2026-12-01T00:00:00.000000Z"
    assert parse_time("2026-12-01T23:30+02:00") == "2026-12-01T21:30:00.000000Z"
    assert parse_time("2026-12-01T21:00:00.5") == "2026-12-01T21:00:00.500000Z"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("21:00")
