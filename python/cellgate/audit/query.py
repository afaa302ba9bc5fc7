"""``cellgate audit query``: the records that match every filter, across chains and segments,
merged in time order.

Streams: each chain is read segment by segment, line by line, and the chains are merged as they
are read (``heapq.merge``), so memory holds one chunk per chain, never the trail. A line is parsed
only when a cheap byte test (the filter's ``"key":value`` as the writer spells it) says it might
match; ``--since``/``--until`` skip whole segments by the hours in their names (with an hour of
slack). Within a chain records come in the order written, which is time order as long as the
writer's clock does not step back. A line that is not
a record (torn, damaged) is skipped and reported once per segment through ``on_skip``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from cellgate.audit.layout import SEGMENT_NAME, chains, segment_names, whole_lines

__all__ = ["Filters", "Match", "query"]


@dataclass(frozen=True)
class Filters:
    """What a record must match; every filter that is set must hold. ``since`` and ``until``
    are times in the trail's format (``layout.parse_time``): ``since <= time < until``.
    ``customer`` matches a request's customer and an admin record whose target is that
    customer."""

    customer: str | None = None
    since: str | None = None
    until: str | None = None
    event: str | None = None
    reason: str | None = None
    cell: str | None = None
    outcome: str | None = None
    request_id: str | None = None
    trace_id: str | None = None

    def needles(self) -> list[bytes]:
        """Byte strings every matching line holds (keys are written ``"key":value``)."""
        out = []
        for name in ("customer", "event", "reason", "cell", "outcome", "request_id", "trace_id"):
            value = getattr(self, name)
            if value is not None:
                out.append(b'"%s":%s' % (name.encode(), orjson.dumps(value)))
        return out

    def matches(self, record: dict[str, Any]) -> bool:
        """True when ``record`` (a parsed line) matches every filter that is set."""
        time = record.get("time")
        if self.since is not None and not (isinstance(time, str) and time >= self.since):
            return False
        if self.until is not None and not (isinstance(time, str) and time < self.until):
            return False
        if self.customer is not None and record.get("customer") != self.customer:
            target = record.get("target")
            if not (
                record.get("event") == "admin"
                and isinstance(target, dict)
                and target.get("customer") == self.customer
            ):
                return False
        for name in ("event", "reason", "cell", "outcome", "request_id", "trace_id"):
            value = getattr(self, name)
            if value is not None and record.get(name) != value:
                return False
        return True

    def is_empty(self) -> bool:
        """True when no filter is set."""
        return all(getattr(self, f.name) is None for f in fields(self))


@dataclass(frozen=True)
class Match:
    """A matching record: where it sorts (time, chain, seq), its line as stored, and the
    record parsed."""

    key: tuple[str, int, int]
    line: bytes
    record: dict[str, Any]


def _hour(name: str, shift_hours: int) -> str:
    """The start of the UTC hour in a segment's name, moved ``shift_hours``, in the trail's time
    format."""
    match = SEGMENT_NAME.fullmatch(name)
    assert match is not None
    start = datetime.strptime(match[2], "%Y%m%dT%H").replace(tzinfo=UTC)
    return (start + timedelta(hours=shift_hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _chain_matches(
    chain_dir: Path, filters: Filters, on_skip: Callable[[Path, int], None] | None
) -> Iterator[Match]:
    """One chain's matching records, in chain order."""
    needles = filters.needles()
    names = segment_names(chain_dir)
    # The time sits at a fixed place and sorts as bytes: lines outside the window are skipped
    # unparsed (the parsed record is checked again).
    window = filters.since is not None or filters.until is not None
    since = (filters.since or "").encode()
    until = (filters.until or "~").encode()
    give_up = b"~"
    if filters.until is not None:
        limit = datetime.strptime(filters.until, "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(hours=1)
        give_up = limit.strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    for index, name in enumerate(names):
        following = names[index + 1] if index + 1 < len(names) else None
        # A segment's records lie between its first record's hour and the next segment's first
        # record; an hour of slack either side leaves room for a clock stepped back.
        if filters.since is not None and following and _hour(following, 2) <= filters.since:
            continue
        if filters.until is not None and _hour(name, -1) >= filters.until:
            return
        path = chain_dir / name
        skipped = 0
        first_skipped = 0
        try:
            for line_index, (_, line) in enumerate(whole_lines(path), 1):
                if needles and not all(needle in line for needle in needles):
                    continue
                if window:
                    at = line.find(b',"time":"') + 9
                    time = line[at : at + 27] if at > 8 else b""
                    if len(time) == 27 and not since <= time < until:
                        if time >= give_up:
                            return  # an hour past --until: the rest of the chain is later
                        continue
                try:
                    record = orjson.loads(line)
                    key = (record["time"], record["chain"], record["seq"])
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    skipped += 1
                    first_skipped = first_skipped or line_index
                    continue
                if filters.matches(record):
                    yield Match(key, line, record)
        except FileNotFoundError:
            continue  # removed by retention while we read
        if skipped and on_skip is not None:
            on_skip(path, first_skipped)


def query(
    directory: Path,
    filters: Filters,
    on_skip: Callable[[Path, int], None] | None = None,
) -> Iterator[Match]:
    """Every record under ``directory`` that matches ``filters``, in time order (ties by chain,
    then seq). ``on_skip(path, line)`` hears of a segment holding lines that are not records."""
    streams = [_chain_matches(chain.path, filters, on_skip) for chain in chains(Path(directory))]
    return heapq.merge(*streams, key=lambda match: match.key)
