"""Pure-Python reference of the core's canonical path (``rust/target.rs``), written from the
rules rather than from the Rust: refuse what no rule should see, remove dot segments (RFC 3986
section 5.2.4), merge slashes, and encode the result for the wire so that one decoding gives it
back. Used as the oracle of the core's path handling in the property tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["CanonicalPath", "PathRefused", "canonicalize"]

#: What may stand for itself in a path: RFC 3986 ``pchar`` and ``/``, less ``%``.
_SAFE = "-._~!$&'()*+,=:@/"
_ESCAPED_SLASH = re.compile(r"%(2[fF]|5[cC])")


class PathRefused(ValueError):
    """The target is refused: 400 ``bad_path``."""


@dataclass(frozen=True)
class CanonicalPath:
    """What the rules see (``path``) and what the cell receives (``wire``)."""

    path: str
    wire: str


def _remove_dots_and_merge(path: str, normalize: bool, merge: bool) -> str:
    segments = path[1:].split("/")
    kept: list[str] = []
    trailing = False
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        trailing = False
        if normalize and segment == ".":
            trailing = True
        elif normalize and segment == "..":
            if kept:
                kept.pop()
            trailing = True
        elif segment == "" and last:
            trailing = True
        elif segment == "" and merge:
            continue
        else:
            kept.append(segment)
    out = "".join("/" + segment for segment in kept)
    return out + "/" if trailing or not kept else out


def canonicalize(
    decoded: str,
    *,
    normalize_path: bool = True,
    merge_slashes: bool = True,
    path_with_escaped_slashes_action: str = "reject_request",
) -> CanonicalPath:
    """The canonical form of a path as the server decoded it; PathRefused saying why."""
    if not decoded.startswith("/"):
        raise PathRefused("not origin-form")
    for char in decoded:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            raise PathRefused(f"control character U+{code:04X}")
        if char in "\\;\ufffd":
            raise PathRefused(f"refused character {char!r}")
    escapes = [m.group(1).lower() for m in _ESCAPED_SLASH.finditer(decoded)]
    if escapes:
        action = path_with_escaped_slashes_action
        if action == "reject_request" or (action == "unescape_and_forward" and "5c" in escapes):
            raise PathRefused("escaped slash")
        if action == "unescape_and_forward":
            decoded = re.sub(r"%2[fF]", "/", decoded)
    path = _remove_dots_and_merge(decoded, normalize_path, merge_slashes)
    return CanonicalPath(path, quote(path, safe=_SAFE))
