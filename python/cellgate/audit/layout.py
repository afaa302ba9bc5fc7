"""Where the audit trail's pieces lie (FORMAT.md's layout) and how the tools read them.

Shared by ``verify``, ``query`` and ``tail``: the chain directories, the segment files in chain
order, the whole lines of a segment (a torn last line is not one), and the time format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "CHAIN_DIR",
    "DIGESTS_FILE",
    "KEY_FILE",
    "OUTCOMES",
    "SEGMENT_NAME",
    "Chain",
    "chains",
    "format_time",
    "parse_time",
    "segment_names",
    "whole_lines",
]

KEY_FILE = "audit-key.pub"
"""The trail's own copy of the digests' public key (self-attested)."""

DIGESTS_FILE = "digests.jsonl"
"""Each chain's signed digests and retention entries."""

CHAIN_DIR = re.compile(r"chain-(0|[1-9][0-9]*)")
"""A chain's directory name; group 1 is its number."""

SEGMENT_NAME = re.compile(r"([0-9]{12})-([0-9]{8}T[0-9]{2})\.jsonl")
"""A segment's file name: its first record's seq and that record's UTC hour."""

OUTCOMES = ("forwarded", "refused", "failed", "cancelled", "applied")
"""The values of a record's ``outcome``: a request's four, and ``applied`` for an admin action
that took effect (the gateway's admin API writes it; a refused one is ``refused``)."""

READ_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Chain:
    """One chain of the trail: its number and its directory."""

    number: int
    path: Path


def chains(directory: Path) -> list[Chain]:
    """The chains under ``directory`` (``chain-N/`` directories), in order of N."""
    found = []
    for entry in directory.iterdir():
        match = CHAIN_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append(Chain(int(match[1]), entry))
    return sorted(found, key=lambda chain: chain.number)


def segment_names(chain_dir: Path) -> list[str]:
    """The segment files of a chain, in chain order (name order)."""
    try:
        names = [name.name for name in chain_dir.iterdir() if SEGMENT_NAME.fullmatch(name.name)]
    except FileNotFoundError:
        return []
    return sorted(names)


def whole_lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for each whole line of ``path`` from byte ``start`` on, without its
    newline; a last line with no newline (being written, or torn by a crash) is left out. Reads
    in chunks, so a segment never has to fit in memory."""
    with open(path, "rb") as file:
        file.seek(start)
        offset = start
        carry = b""
        while chunk := file.read(READ_CHUNK_BYTES):
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for line in lines:
                yield offset, line
                offset += len(line) + 1


def format_time(moment: datetime) -> str:
    """``moment`` as the trail writes times: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> str:
    """An ISO 8601 time (``2026-12-01T21:00:00Z``, ``2026-12-01T21:00``, ``2026-12-01``, any
    UTC offset; a time without one is UTC) in the trail's format, which sorts as time does.
    Raises ValueError with a message fit for the user."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T21:00:00Z or 2026-12-01)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)
