"""An admin change waits for its audit record (on disk with a strict trail; up to 10 s when the
disk stalls). The gateway makes the change on a thread, so the worker's loop goes on serving
while it waits. The gateway, its router and the loop are real. The stall is a stand-in admin API
that holds the change on cue, because a disk that stalls on cue cannot be made here."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import rloop
from cellgate.admin import AdminApi
from cellgate.config import admin_secret, build_router, load_config
from cellgate.demo.launch import demo_admin_token
from cellgate.gateway import Gateway
from cellgate.problems import Response

ADMIN = f"Bearer {demo_admin_token()}"


class StallingAdmin(AdminApi):
    """Holds every POST until ``release`` is set, as a stalled disk holds its audit record."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.entered = threading.Event()
        self.release = threading.Event()

    def _answer(self, method: str, path: str, authorization: str | None, body: bytes) -> Response:
        if method == "POST":
            self.entered.set()
            self.release.wait(5)
        return super()._answer(method, path, authorization, body)


class Scope:
    proto = "http"

    def __init__(self, method: str, path: str) -> None:
        self.method, self.path = method, path
        self.headers = {"authorization": ADMIN}


class Protocol:
    def __init__(self, body: bytes = b"") -> None:
        self.body = body
        self.status: int | None = None

    async def __call__(self) -> bytes:
        return self.body

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.status = status


# rloop, granian's loop and cellgate serve's default, leaves its self-pipe open when closed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_held_admin_change_does_not_hold_the_loop(demo_config: Path):
    config = load_config(demo_config)
    router = build_router(config)
    admin = StallingAdmin(router, admin_secret(config))
    gateway = Gateway(router, max_request_bytes=config.forward.max_request_bytes, admin=admin)
    loop = rloop.new_event_loop()
    gateway.__rsgi_init__(loop)

    async def scenario() -> tuple[bool, float, int | None]:
        revoke = Protocol(b'{"jti": "held", "forget_after_s": 4102444800}')
        change = asyncio.ensure_future(
            gateway.__rsgi__(Scope("POST", "/_cellgate/revocations"), revoke)
        )
        await loop.run_in_executor(None, admin.entered.wait, 5)
        started = time.monotonic()
        health = Protocol()
        await gateway.__rsgi__(Scope("GET", "/_cellgate/health"), health)
        answered_s = time.monotonic() - started
        held = not change.done()
        admin.release.set()
        await change
        assert health.status == 200
        return held, answered_s, revoke.status

    try:
        held, answered_s, revoked = loop.run_until_complete(scenario())
    finally:
        admin.release.set()
        gateway.__rsgi_del__(loop)
        loop.close()
    assert held, "the change was still held when the loop answered the health check"
    assert answered_s < 1.0, answered_s
    assert revoked == 200
