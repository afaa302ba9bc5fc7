"""RSGI apps that isolate the bridge's cost under granian (served by bridge_load.py).

``constant`` answers at once: granian's ceiling. ``bridge`` awaits one future resolved through the
bridge's descriptor (one wake-up of the loop) per request: the ceiling less the bridge.
"""

from __future__ import annotations

from cellgate import Bridge

BODY = b'{"ok":true}'
HEADERS = [("content-type", "application/json")]


class Constant:
    """Answers a constant body."""

    async def __rsgi__(self, scope, proto):
        proto.response_bytes(200, HEADERS, BODY)


class BridgeRoundTrip:
    """Awaits one no-op bridge completion, then answers the constant body."""

    def __rsgi_init__(self, loop):
        self.bridge = Bridge(loop)
        loop.add_reader(self.bridge.fileno(), self.bridge.drain)

    def __rsgi_del__(self, loop):
        loop.remove_reader(self.bridge.fileno())

    async def __rsgi__(self, scope, proto):
        await self.bridge.noop()
        proto.response_bytes(200, HEADERS, BODY)


constant = Constant()
bridge = BridgeRoundTrip()
