"""Reading a request body as it arrives: counted chunk by chunk, chunked or not, so that a body
past the limit is refused without being held whole, and one that trickles in is cut off."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["BodyTimeout", "BodyTooLarge", "read_body"]


class BodyTooLarge(Exception):
    """The body passed ``max_bytes``; reading stopped at ``read_bytes``."""

    def __init__(self, read_bytes: int) -> None:
        super().__init__(read_bytes)
        self.read_bytes = read_bytes


class BodyTimeout(Exception):
    """The whole body did not arrive within the allowed time; ``read_bytes`` had."""

    def __init__(self, read_bytes: int) -> None:
        super().__init__(read_bytes)
        self.read_bytes = read_bytes


async def read_body(proto: Any, max_bytes: int, timeout_s: float) -> bytes:
    """The body of an RSGI request, read chunk by chunk within ``timeout_s``. Raises BodyTooLarge
    as soon as more than ``max_bytes`` have arrived, BodyTimeout when time runs out first."""
    chunks: list[bytes] = []
    read_bytes = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in proto:
                read_bytes += len(chunk)
                if read_bytes > max_bytes:
                    raise BodyTooLarge(read_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(read_bytes) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
