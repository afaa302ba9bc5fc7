"""``cellgate audit tail``: the last records across chains in time order, and, with ``follow``,
the records appended after them, in new segments and new chains too.

The last ``n`` are read backwards from the end of each chain's newest segments (a few blocks, not
the trail). Following polls: each chain's current segment is read on from where the last poll
stopped (a line still being written waits for its newline), a newer segment is moved to once the
current one is read to its end, and a new ``chain-N/`` is read from its first segment. The records
one poll finds are printed in time order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from cellgate.audit.layout import chains, segment_names
from cellgate.audit.query import Match

__all__ = ["Follower", "last_records"]

_BLOCK_BYTES = 64 * 1024


def _parse(line: bytes) -> Match | None:
    try:
        record = orjson.loads(line)
        return Match((record["time"], record["chain"], record["seq"]), line, record)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _last_lines(path: Path, count: int, end: int | None = None) -> tuple[list[bytes], int]:
    """The last ``count`` whole lines of ``path`` before byte ``end`` (default: its end; fewer
    when it holds fewer), oldest first, and the offset just after the last whole line."""
    with open(path, "rb") as file:
        size = file.seek(0, 2)
        end = size if end is None else min(end, size)
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= count:
            step = min(_BLOCK_BYTES, position)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    whole_end = data.rfind(b"\n") + 1
    lines = data[:whole_end].split(b"\n")[:-1]
    if position > 0:
        lines = lines[1:]  # the first piece may start mid-line
    return lines[-count:] if count else [], position + whole_end


def _chain_last(
    chain_dir: Path, count: int, newest: str | None = None, end: int | None = None
) -> list[Match]:
    """A chain's last ``count`` records, oldest first; with ``newest`` and ``end``, those up to
    byte ``end`` of segment ``newest``."""
    found: list[Match] = []
    names = segment_names(chain_dir)
    if newest is not None:
        names = [name for name in names if name <= newest]
    for name in reversed(names):
        if len(found) >= count:
            break
        try:
            stop = end if name == newest else None
            lines, _ = _last_lines(chain_dir / name, count - len(found), stop)
        except FileNotFoundError:
            continue
        found[:0] = [m for m in map(_parse, lines) if m is not None]
    return found[-count:] if count else []


def last_records(directory: Path, count: int) -> list[Match]:
    """The last ``count`` records under ``directory`` across chains, oldest first."""
    every = [m for chain in chains(Path(directory)) for m in _chain_last(chain.path, count)]
    every.sort(key=lambda match: match.key)
    return every[-count:] if count else []


@dataclass
class _Position:
    """Where following a chain stands: its current segment and the offset read up to."""

    segment: str | None
    offset: int


class Follower:
    """Follows a trail from its current end; ``poll`` returns the records appended since the
    last poll, in time order."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.positions: dict[int, _Position] = {}
        for chain in chains(self.directory):
            names = segment_names(chain.path)
            if names:
                _, end = _last_lines(chain.path / names[-1], 0)
                self.positions[chain.number] = _Position(names[-1], end)
            else:
                self.positions[chain.number] = _Position(None, 0)

    def last(self, count: int) -> list[Match]:
        """The last ``count`` records before where following starts, oldest first: what
        ``poll`` returns next comes after them, with nothing left out between."""
        every = []
        for chain in chains(self.directory):
            position = self.positions.get(chain.number)
            if position is None or position.segment is None:
                continue
            every.extend(_chain_last(chain.path, count, position.segment, position.offset))
        every.sort(key=lambda match: match.key)
        return every[-count:] if count else []

    def poll(self) -> list[Match]:
        """The records written since the last poll (or since the follower started)."""
        found: list[Match] = []
        for chain in chains(self.directory):
            position = self.positions.setdefault(chain.number, _Position(None, 0))
            names = segment_names(chain.path)
            if position.segment is None:
                if not names:
                    continue
                position.segment, position.offset = names[0], 0
            while True:
                found.extend(self._read_on(chain.path, position))
                later = [name for name in names if name > position.segment]
                if not later:
                    break
                # The writer has moved on: what is left of this segment is read; a torn line
                # at its end never gets its newline.
                found.extend(self._read_on(chain.path, position))
                position.segment, position.offset = later[0], 0
        found.sort(key=lambda match: match.key)
        return found

    @staticmethod
    def _read_on(chain_dir: Path, position: _Position) -> list[Match]:
        assert position.segment is not None
        try:
            with open(chain_dir / position.segment, "rb") as file:
                file.seek(position.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        whole_end = data.rfind(b"\n") + 1
        position.offset += whole_end
        return [m for m in map(_parse, data[:whole_end].split(b"\n")[:-1]) if m is not None]

    def run(
        self,
        emit: Callable[[list[Match]], None],
        poll_s: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Polls every ``poll_s`` seconds and hands each non-empty batch to ``emit``, until
        interrupted (KeyboardInterrupt propagates)."""
        while True:
            batch = self.poll()
            if batch:
                emit(batch)
            sleep(poll_s)
