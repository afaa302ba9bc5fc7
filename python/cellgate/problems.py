"""RFC 9457 problem+json answers for refusals made outside the core (body size, admin API)."""

from __future__ import annotations

import orjson

__all__ = ["problem"]

Response = tuple[int, list[tuple[str, str]], bytes]


def problem(
    status: int,
    reason: str,
    title: str,
    detail: str,
    request_id: str = "",
    trace_id: str | None = None,
) -> Response:
    """A ``(status, headers, body)`` problem answer carrying ``reason`` as its machine code, and
    the request's trace id when it has one."""
    fields = {
        "type": f"urn:cellgate:problem:{reason}",
        "title": title,
        "status": status,
        "detail": detail,
        "reason": reason,
        "request_id": request_id,
    }
    if trace_id is not None:
        fields["trace_id"] = trace_id
    body = orjson.dumps(fields)
    headers = [("content-type", "application/problem+json"), ("cache-control", "no-store")]
    if request_id:
        headers.append(("x-request-id", request_id))
    return status, headers, body
