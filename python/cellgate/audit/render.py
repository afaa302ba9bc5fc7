"""How ``query`` and ``tail`` print records: JSON Lines (the lines as stored) or a table."""

from __future__ import annotations

from typing import Any

__all__ = ["FORMATS", "TABLE_HEADER", "table_row"]

FORMATS = ("jsonl", "table")
"""The output formats of ``query`` and ``tail``."""

# (title, width); the last column takes what is left.
_COLUMNS = (
    ("TIME", 27),
    ("CHAIN:SEQ", 11),
    ("CUSTOMER", 14),
    ("METHOD", 7),
    ("PATH", 30),
    ("CELL", 20),
    ("STATUS", 6),
    ("OUTCOME", 9),
    ("REASON", 0),
)


def _fit(value: str, width: int) -> str:
    if width == 0:
        return value
    if len(value) > width:
        value = value[: width - 1] + "…"
    return value.ljust(width)


def _row(values: list[str]) -> str:
    return " ".join(_fit(v, w) for v, (_, w) in zip(values, _COLUMNS, strict=True)).rstrip()


TABLE_HEADER = _row([title for title, _ in _COLUMNS])
"""The table's title line."""


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


def table_row(record: dict[str, Any]) -> str:
    """One record as a fixed-width table line; an ``admin`` record shows ``ADMIN`` as its
    method and its action (and a target other than a customer) as its path."""
    if record.get("event") == "admin":
        target = record.get("target")
        target = target if isinstance(target, dict) else {}
        customer = target.get("customer")
        action = _text(record.get("action"))
        others = " ".join(f"{k}={v}" for k, v in target.items() if k != "customer")
        method, path = "ADMIN", f"{action} {others}".rstrip()
    else:
        customer, method, path = record.get("customer"), record.get("method"), record.get("path")
    return _row(
        [
            _text(record.get("time")),
            f"{record.get('chain')}:{record.get('seq')}",
            _text(customer),
            _text(method),
            _text(path),
            _text(record.get("cell")),
            _text(record.get("status")),
            _text(record.get("outcome")),
            _text(record.get("reason")),
        ]
    )
