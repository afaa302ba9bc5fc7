"""IANA time zones compiled into UTC-offset tables the core can read: policy as data.

The core has no time zone database. For each zone a profile names, the control plane asks the
standard library's `zoneinfo` for every change of UTC offset in a range of years and hands the core
a table of ``[utc_seconds, offset_seconds]`` pairs, sorted by instant, strictly increasing. The
first pair is the start of the range and its offset also holds before it; the last pair's offset
holds after the range ends. The core finds an instant's offset by binary search.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from datetime import UTC, datetime

#: The years compiled by default: the Unix epoch to well past any customer's lifetime.
DEFAULT_START_YEAR = 1970
DEFAULT_END_YEAR = 2100

#: How far apart the scan samples zoneinfo. A pair of offset changes closer than this that
#: returns to the same offset would be missed; since 1970 the closest changes in tzdata are
#: about a week apart (America/Cambridge_Bay, 2000).
_SCAN_STEP_S = 86_400


def load_zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called `name`, or a ValueError naming it when the IANA database has no such zone."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as err:
        raise ValueError(
            f"unknown time zone {name!r}: not an IANA zone name such as 'Europe/Berlin'"
        ) from err


def offset_s_at(zone: zoneinfo.ZoneInfo, utc_s: int) -> int:
    """The zone's UTC offset in seconds at the instant `utc_s` (seconds since the Unix epoch)."""
    offset = datetime.fromtimestamp(utc_s, tz=zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def transitions(
    name: str, start_year: int = DEFAULT_START_YEAR, end_year: int = DEFAULT_END_YEAR
) -> list[tuple[int, int]]:
    """Every change of UTC offset in `name` from `start_year` to the end of `end_year`.

    Returns ``(utc_seconds, offset_seconds)`` pairs: the first is the start of `start_year` (UTC)
    with the offset then, each further pair the first second of a new offset.
    """
    if start_year > end_year:
        raise ValueError(f"start_year {start_year} is after end_year {end_year}")
    zone = load_zone(name)
    start_s = int(datetime(start_year, 1, 1, tzinfo=UTC).timestamp())
    end_s = int(datetime(end_year + 1, 1, 1, tzinfo=UTC).timestamp())
    table = [(start_s, offset_s_at(zone, start_s))]
    scanned_s = start_s
    while scanned_s < end_s:
        next_s = min(scanned_s + _SCAN_STEP_S, end_s)
        current = table[-1][1]
        if offset_s_at(zone, next_s) == current:
            scanned_s = next_s
            continue
        # The offset is `current` at scanned_s and not at next_s: find the first second it changed.
        before_s, after_s = scanned_s, next_s
        while after_s - before_s > 1:
            middle_s = (before_s + after_s) // 2
            if offset_s_at(zone, middle_s) == current:
                before_s = middle_s
            else:
                after_s = middle_s
        table.append((after_s, offset_s_at(zone, after_s)))
        scanned_s = after_s
    return table


def compile_zones(
    names: Iterable[str], start_year: int = DEFAULT_START_YEAR, end_year: int = DEFAULT_END_YEAR
) -> dict[str, list[list[int]]]:
    """The core's ``zones`` setting for `names`: each zone's table as JSON-ready lists.

    Every unknown name is reported in one ValueError.
    """
    zones: dict[str, list[list[int]]] = {}
    unknown: list[str] = []
    for name in sorted(set(names)):
        try:
            table = transitions(name, start_year, end_year)
        except ValueError:
            unknown.append(name)
            continue
        zones[name] = [[utc_s, offset_s] for utc_s, offset_s in table]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise ValueError(f"unknown time zone(s): {listed}: not IANA zone names")
    return zones


def table_offset_s(table: list[tuple[int, int]] | list[list[int]], utc_s: int) -> int:
    """The offset a compiled table gives at `utc_s`, found the way the core finds it."""
    low, high = 0, len(table)
    while low < high:  # the first pair starting after utc_s
        middle = (low + high) // 2
        if table[middle][0] <= utc_s:
            low = middle + 1
        else:
            high = middle
    return table[max(low - 1, 0)][1]
