"""Reading a request body as it arrives: counted chunk by chunk, chunked or not, so that a body
past the limit is refused without being held whole, and one that trickles in is cut off."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["BodyCutShort", "BodyTimeout", "BodyTooLarge", "read_body"]


class BodyTooLarge(Exception):
    """The body passed ``max_bytes``; reading stopped at ``read_bytes``."""

    def __init__(self, read_bytes: int) -> None:
        super().__init__(read_bytes)
        self.read_bytes = read_bytes


class BodyCutShort(Exception):
    """The body ended before it was whole: short of its Content-Length, or cut by an error that
    granian hands over as an empty chunk before the end (a chunked body whose client went away
    mid-body; request trailers look the same, and are not forwarded either). It must not be
    forwarded as if whole; ``read_bytes`` had arrived."""

    def __init__(self, read_bytes: int) -> None:
        super().__init__(read_bytes)
        self.read_bytes = read_bytes


class BodyTimeout(Exception):
    """The whole body did not arrive within the allowed time; ``read_bytes`` had."""

    def __init__(self, read_bytes: int) -> None:
        super().__init__(read_bytes)
        self.read_bytes = read_bytes


async def read_body(
    proto: Any, max_bytes: int, timeout_s: float, length: int | None = None
) -> bytes:
    """The body of an RSGI request, read chunk by chunk within ``timeout_s``. Raises BodyTooLarge
    as soon as more than ``max_bytes`` have arrived, BodyTimeout when time runs out first, and
    BodyCutShort when the body ends before it is whole (granian ends the body without raising
    when the client disconnects): short of its Content-Length ``length``, or cut by an
    error."""
    chunks: list[bytes] = []
    read_bytes = 0
    try:
        async with asyncio.timeout(timeout_s):
            ended = False
            async for chunk in proto:
                # granian ends a body with one empty chunk; a body cut by an error (or carrying
                # trailers) hands over an empty chunk for that frame, then the end: two.
                if ended:
                    raise BodyCutShort(read_bytes)
                if not chunk:
                    ended = True
                    continue
                read_bytes += len(chunk)
                if read_bytes > max_bytes:
                    raise BodyTooLarge(read_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(read_bytes) from None
    if length is not None and read_bytes < length:
        raise BodyCutShort(read_bytes)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
