"""The RSGI application granian serves: decide in the core, read the body, forward through the core.

A request without a body crosses into the core once: ``serve`` decides and, when routed, starts
the forward, which runs on the worker's tokio thread and completes through the bridge (a
descriptor the loop watches). A request with a body takes three steps: ``decide``, the body
read, ``forward``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from cellgate import _core
from cellgate.admin import ADMIN_PREFIX, AdminApi
from cellgate.body import BodyTimeout, BodyTooLarge, read_body
from cellgate.config import admin_secret, build_router, load_config
from cellgate.problems import problem

__all__ = ["CONFIG_ENV", "Gateway", "create_app"]

#: The environment variable naming the configuration file a worker loads.
CONFIG_ENV = "CELLGATE_CONFIG"


class Gateway:
    """One worker's gateway: a router, its admin API and, once the loop starts, a bridge."""

    def __init__(
        self,
        router: _core.Router,
        *,
        max_request_bytes: int,
        admin: AdminApi,
        client_body_timeout_s: float = 10.0,
    ) -> None:
        self.router = router
        self.max_request_bytes = max_request_bytes
        self.client_body_timeout_s = client_body_timeout_s
        self.admin = admin
        self.bridge: _core.Bridge | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.bridge = _core.Bridge(loop)
        loop.add_reader(self.bridge.fileno(), self.bridge.drain)
        self.router.start_health_checks()

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.router.stop_health_checks()
        if self.bridge is not None:
            loop.remove_reader(self.bridge.fileno())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        headers = scope.headers
        path = scope.path
        if path.startswith(ADMIN_PREFIX):
            body = b"" if scope.method in ("GET", "HEAD", "DELETE") else await proto()
            proto.response_bytes(
                *self.admin.handle(scope.method, path, headers.get("authorization"), body)
            )
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
            proto.response_bytes(*(answer if type(answer) is tuple else await answer))
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
            proto.response_bytes(*decision.problem)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_request_bytes):
            decision.release()
            proto.response_bytes(*self._too_large(decision, f"content-length {length!r}"))
            return
        try:
            body = await read_body(proto, self.max_request_bytes, self.client_body_timeout_s)
        except BodyTooLarge as too_large:
            decision.release()
            what = f"the body, {too_large.read_bytes} bytes read so far,"
            proto.response_bytes(*self._too_large(decision, what))
            return
        except BodyTimeout as timeout:
            decision.release()
            proto.response_bytes(*self._body_timeout(decision, timeout.read_bytes))
            return
        except Exception:
            # The client went away mid-body: nobody is left to answer.
            decision.release()
            return
        answer = await self.router.forward(
            self.bridge,
            decision,
            scope.method,
            scope.query_string,
            header_items,
            body,
            scope.scheme,
        )
        proto.response_bytes(*answer)

    def _too_large(self, decision: _core.Decision, what: str):
        detail = f"{what} is not a size up to {self.max_request_bytes} bytes"
        title = "The request body is too large"
        return problem(413, "body_too_large", title, detail, decision.request_id, decision.trace_id)

    def _body_timeout(self, decision: _core.Decision, read_bytes: int):
        detail = (
            f"the body did not arrive within {self.client_body_timeout_s:g} s"
            f" ({read_bytes} bytes had)"
        )
        title = "The request body arrived too slowly"
        reason = "client_body_timeout"
        return problem(408, reason, title, detail, decision.request_id, decision.trace_id)


def create_app() -> Gateway:
    """The granian factory: loads the configuration named by ``CELLGATE_CONFIG``."""
    config = load_config(os.environ[CONFIG_ENV])
    router = build_router(config)
    return Gateway(
        router,
        max_request_bytes=config.forward.max_request_bytes,
        client_body_timeout_s=config.forward.client_body_timeout_ms / 1000,
        admin=AdminApi(router, admin_secret(config)),
    )
