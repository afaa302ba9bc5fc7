"""The RSGI application granian serves: decide in the core, read the body, forward through the core.

A request without a body crosses into the core once: ``serve`` decides and, when routed, starts
the forward, which runs on the worker's tokio thread and completes through the bridge (a
descriptor the loop watches). A request with a body takes three steps: ``decide``, the body
read, ``forward``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from cellgate import _core
from cellgate.admin import ADMIN_PREFIX, CHANGING_METHODS, AdminApi
from cellgate.body import BodyCutShort, BodyTimeout, BodyTooLarge, read_body
from cellgate.config import admin_secret, build_router, load_config
from cellgate.state import ZONE_ENV, revocation_log

__all__ = ["CONFIG_ENV", "DRAIN_ENV", "Gateway", "create_app"]

#: The environment variable naming the configuration file a worker loads.
CONFIG_ENV = "CELLGATE_CONFIG"

#: The environment variable naming the file whose appearance says the gateway is shutting down
#: (``cellgate serve`` writes it on SIGTERM, before granian stops the workers).
DRAIN_ENV = "CELLGATE_DRAIN_FILE"

#: How often the gateway looks for forwards that have run a while, to watch their clients: one
#: found in two looks in a row gets a watch (a task) that cancels it if its client goes away.
#: Most forwards are answered long before, and cost a dictionary entry.
DISCONNECT_SWEEP_S = 0.25


class Gateway:
    """One worker's gateway: a router, its admin API and, once the loop starts, a bridge."""

    def __init__(
        self,
        router: _core.Router,
        *,
        max_request_bytes: int,
        admin: AdminApi,
        client_body_timeout_s: float = 10.0,
        drain_file: str | None = None,
    ) -> None:
        self.router = router
        self.drain_file = drain_file
        self.max_request_bytes = max_request_bytes
        self.client_body_timeout_s = client_body_timeout_s
        self.admin = admin
        self.bridge: _core.Bridge | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        #: Forwards under way and their clients' protocols.
        self._in_flight: dict[asyncio.Future, Any] = {}
        self._seen_last_sweep: set[asyncio.Future] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.bridge = _core.Bridge(loop)
        self._sweeper = loop.call_later(DISCONNECT_SWEEP_S, self._sweep)
        loop.add_reader(self.bridge.fileno(), self.bridge.drain)
        self.router.start_audit()
        self.router.start_health_checks()
        self.router.start_sharing()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.router.stop_sharing()
        self._keep_heard_revocations()
        self.router.stop_health_checks()
        self.router.stop_audit()
        if self.bridge is not None:
            loop.remove_reader(self.bridge.fileno())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        headers = scope.headers
        path = scope.path
        if path.startswith(ADMIN_PREFIX):
            body = b"" if scope.method in ("GET", "HEAD", "DELETE") else await proto()
            asked = (scope.method, path, headers.get("authorization"), body)
            if scope.method in CHANGING_METHODS:
                # It waits for its audit record (an fsync, or a stalled disk's 10 s): on a
                # thread, so that the requests this worker's loop serves meanwhile do not.
                loop = asyncio.get_running_loop()
                answer = await loop.run_in_executor(None, self.admin.handle, *asked)
            else:
                answer = self.admin.handle(*asked)
            proto.response_bytes(*answer)
            return
        # HTTP/1 carries an authority in the scope only for an absolute-form target.
        absolute_form = scope.authority is not None and scope.http_version[0] == "1"
        length = headers.get("content-length")
        if length is None and "transfer-encoding" not in headers:
            # RFC 9112 section 6.3: a request with neither header has no body.
            answer = self.router.serve(
                self.bridge,
                scope.method,
                path,
                scope.query_string,
                headers.items(),
                scope.client,
                scope.scheme,
                absolute_form,
            )
            if type(answer) is not tuple:
                answer = await self._answer(answer, proto)
                if answer is None:
                    return
            proto.response_bytes(*answer)
            return
        header_items = headers.items()
        decision = self.router.decide(
            scope.method,
            path,
            None,
            scope.client,
            headers=header_items,
            absolute_form=absolute_form,
        )
        if not decision.ok:
            await self._refuse(proto, decision)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_request_bytes):
            await self._refuse(proto, decision, "body_too_large", self._too_large(length))
            return
        expected = None if length is None else int(length)
        try:
            body = await read_body(
                proto, self.max_request_bytes, self.client_body_timeout_s, expected
            )
        except BodyTooLarge as too_large:
            what = f"the body, {too_large.read_bytes} bytes read so far,"
            await self._refuse(proto, decision, "body_too_large", self._too_large(what))
            return
        except BodyTimeout as timeout:
            detail = self._body_timeout(timeout.read_bytes)
            await self._refuse(proto, decision, "client_body_timeout", detail)
            return
        except BodyCutShort as cut:
            # Whoever is left (if anyone) hears why; the cell hears nothing of a part-request.
            detail = f"the body ended after {cut.read_bytes} bytes, before it was whole"
            await self._refuse(proto, decision, "body_incomplete", detail)
            return
        except Exception:
            # The client went away mid-body: nobody is left to answer.
            self.router.refuse(self.bridge, decision, "client_disconnected")
            return
        forwarded = self.router.forward(
            self.bridge,
            decision,
            scope.method,
            scope.query_string,
            header_items,
            body,
            scope.scheme,
        )
        answer = await self._answer(forwarded, proto)
        if answer is not None:
            proto.response_bytes(*answer)

    async def _answer(self, forwarded: asyncio.Future, proto: Any):
        """The cell's answer; None when the client went away first (the forward is cancelled:
        its connection to the cell closed, its slot and breaker permit given back)."""
        self._in_flight[forwarded] = proto
        try:
            return await forwarded
        except asyncio.CancelledError:
            if forwarded.cancelled():
                return None
            raise
        finally:
            del self._in_flight[forwarded]

    def _sweep(self) -> None:
        """Watches the clients of the forwards that were already under way at the last sweep,
        and looks for the drain file: once it is there, what arrives on kept-alive connections
        is refused 503 draining (and the connection closed) while the requests in flight
        finish."""
        drain_file = self.drain_file
        if drain_file is not None and not self.router.draining and os.path.exists(drain_file):
            self.router.draining = True
        self._keep_heard_revocations()
        seen = self._seen_last_sweep
        for forwarded, proto in self._in_flight.items():
            if forwarded in seen:
                self._watch(forwarded, proto)
        self._seen_last_sweep = {f for f in self._in_flight if f not in seen}
        self._sweeper = self.loop.call_later(DISCONNECT_SWEEP_S, self._sweep)

    def _keep_heard_revocations(self) -> None:
        """Appends the revocations heard from other nodes to the node's revocation log."""
        heard = orjson.loads(self.router.take_heard_revocations())
        if heard:
            self.admin.keep(heard)

    def _watch(self, forwarded: asyncio.Future, proto: Any) -> None:
        """Cancels `forwarded` if its client disconnects before the cell answers."""

        async def cancel_on_disconnect() -> None:
            await proto.client_disconnect()
            if not forwarded.done():
                self.bridge.cancel(forwarded)
                forwarded.cancel()

        watcher = self.loop.create_task(cancel_on_disconnect())
        forwarded.add_done_callback(lambda _: watcher.cancel())

    async def _refuse(
        self,
        proto: Any,
        decision: _core.Decision,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Answers a decision that is not forwarded (its own refusal, or ``reason``), once the
        core has recorded it."""
        answer = self.router.refuse(self.bridge, decision, reason, detail)
        if type(answer) is not tuple:
            answer = await answer
        proto.response_bytes(*answer)

    def _too_large(self, what: str) -> str:
        return f"{what} is not a size up to {self.max_request_bytes} bytes"

    def _body_timeout(self, read_bytes: int) -> str:
        return (
            f"the body did not arrive within {self.client_body_timeout_s:g} s"
            f" ({read_bytes} bytes had)"
        )


def create_app() -> Gateway:
    """The granian factory: loads the configuration named by ``CELLGATE_CONFIG`` and maps the
    node's zone named by ``CELLGATE_ZONE``; without a zone the worker loads the revocation log
    into its own state."""
    config = load_config(os.environ[CONFIG_ENV])
    zone = os.environ.get(ZONE_ENV) or None
    router = build_router(config, state_zone=zone)
    log = revocation_log(config)
    if zone is None or config.state.redis is not None:
        # With Redis the worker also keeps the log's entries to write back to Redis, which may
        # have restarted empty.
        entries = log.entries(time.time(), config.state.max_token_lifetime_s)
        router.load_revocations(orjson.dumps(entries))
    return Gateway(
        router,
        max_request_bytes=config.forward.max_request_bytes,
        client_body_timeout_s=config.forward.client_body_timeout_ms / 1000,
        admin=AdminApi(router, admin_secret(config), log),
        drain_file=os.environ.get(DRAIN_ENV),
    )
