"""The audit trail's tools: verify its integrity, query it, follow it (``cellgate audit``).

The trail's format is ``FORMAT.md`` beside this file; the gateway's core writes it
(``rust/audit/``), and ``cellgate.reference.audit_trail`` writes the same bytes in Python. The
names below are imported on first use, so that the ``cellgate`` command does not load the
verifier's cryptography to run the gateway.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "KINDS",
    "Break",
    "Filters",
    "Follower",
    "Match",
    "TrailReport",
    "last_records",
    "load_public_key",
    "query",
    "verify_trail",
]

_HOMES = {
    "KINDS": "verify",
    "Break": "verify",
    "TrailReport": "verify",
    "load_public_key": "verify",
    "verify_trail": "verify",
    "Filters": "query",
    "Match": "query",
    "query": "query",
    "Follower": "tail",
    "last_records": "tail",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
