"""The admin API under ``/_cellgate/``: liveness for load balancers, live cell state and token
revocation for operators.

Everything but ``/_cellgate/health`` needs an admin bearer token: HS256, audience
``cellgate-admin``, signed with ``[admin] secret``. Without an ``[admin]`` section those routes
answer 404. Revocations reach every node sharing a Redis (answers say ``"scope": "cluster"``),
else every worker of the node when the node runs a shared-memory zone (``"node"``), else only
the worker that served the call (``"worker"``); each is appended to the revocation log first, so
it outlasts a restart (``"lasting"``). With the zone, cell state (in-flight counts, health,
breaker openings) is the node's; with Redis, breaker openings reach every node (see the README).

    GET    /_cellgate/health                      liveness, no token (503 while draining)
    GET    /_cellgate/cells                       live cell state
    GET    /_cellgate/revocations                 {"tokens": n, "customers": m}
    POST   /_cellgate/revocations                 {"jti": "...", "forget_after_s": 1767225600}
                                                  or {"customer_id": "...", "issued_before_s": T}
    DELETE /_cellgate/revocations/customers/{id}  lifts a customer's revocation
    GET    /_cellgate/audit                       the audit trail's state
    GET    /_cellgate/state                       shared state: scope, worker pid, zone, Redis

Every action that changes state (a revocation, a lift), refused or not, is recorded in the audit
trail with the admin token's ``sub`` before it takes effect; when the trail cannot take the
record the action is refused 503 ``audit_unavailable`` and nothing changes.
"""

from __future__ import annotations

import os
import threading
from typing import Annotated

import jwt
import msgspec
import orjson

from cellgate import _core
from cellgate.problems import Response, problem
from cellgate.state import RevocationLog

__all__ = ["ADMIN_AUDIENCE", "ADMIN_PREFIX", "CHANGING_METHODS", "AdminApi"]

ADMIN_PREFIX = "/_cellgate/"
#: The methods of the admin requests that change state (and are recorded).
CHANGING_METHODS = ("POST", "DELETE")
ADMIN_AUDIENCE = "cellgate-admin"
_JSON = [("content-type", "application/json"), ("cache-control", "no-store")]


class AdminApi:
    """Answers admin requests for one router."""

    def __init__(
        self, router: _core.Router, secret: bytes | None, log: RevocationLog | None = None
    ) -> None:
        self._router = router
        self._secret = secret
        self._log = log
        # Changes are made one at a time, so the log keeps them in the order they took effect.
        self._changing = threading.Lock()

    def keep(self, entries: list[dict]) -> bool:
        """Appends revocations heard from other nodes to the revocation log, so that a restart
        while Redis is away still refuses them; whether they were written."""
        return self._log is not None and self._log.extend(entries)

    def _lasting(self, entry: dict) -> bool:
        """Appends ``entry`` to the revocation log; whether it will outlast a restart."""
        return self._log is not None and self._log.append(entry)

    def _revocations(self, lasting: bool | None = None) -> bytes:
        answer = dict(self._router.revocations, scope=self._router.state_scope)
        if lasting is not None:
            answer["lasting"] = lasting
        return orjson.dumps(answer)

    def _authorize(self, authorization: str | None) -> tuple[Response | None, str]:
        """A refusal, or None; and the admin's identity (the token's ``sub``)."""
        if self._secret is None:
            return problem(404, "not_found", "Not found", "the admin API is not configured"), ""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            detail = "send Bearer <admin token>"
            return problem(401, "admin_token_required", "Admin token required", detail), ""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=ADMIN_AUDIENCE,
                options={"require": ["exp", "aud"]},
            )
        except jwt.InvalidTokenError as err:
            return problem(401, "admin_token_invalid", "Admin token refused", str(err)), ""
        subject = claims.get("sub")
        return None, subject if isinstance(subject, str) else ""

    def _recorded(self, admin: str, action: str, target: dict, answer: Response) -> Response | None:
        """Records ``action`` and the answer it is about to get; a refusal when the trail cannot
        take it (then the action must not happen)."""
        status = answer[0]
        reason = None if status < 400 else orjson.loads(answer[2]).get("reason")
        outcome = "applied" if status < 400 else "refused"
        target_json = orjson.dumps(target).decode()
        if self._router.record_admin(admin, action, target_json, status, outcome, reason):
            return None
        detail = "the audit trail cannot record the action now; nothing was changed"
        return problem(503, "audit_unavailable", "Audit trail unavailable", detail)

    def handle(
        self, method: str, path: str, authorization: str | None, body: bytes = b""
    ) -> Response:
        """The answer to an admin request. One that changes state (``CHANGING_METHODS``) waits
        for its audit record, on disk with a strict trail: call it off the event loop."""
        if method in CHANGING_METHODS:
            with self._changing:
                return self._answer(method, path, authorization, body)
        return self._answer(method, path, authorization, body)

    def _answer(self, method: str, path: str, authorization: str | None, body: bytes) -> Response:
        if path == ADMIN_PREFIX + "health":
            if self._router.draining:
                # Load balancers take the node out while it finishes what is in flight.
                return 503, [*_JSON, ("connection", "close")], b'{"status":"draining"}'
            return 200, _JSON, b'{"status":"ok"}'
        refusal, admin = self._authorize(authorization)
        changes = method in CHANGING_METHODS
        if refusal is not None:
            if changes and refusal[0] == 401:
                target = {"method": method, "path": path}
                return self._recorded("", "unauthorized", target, refusal) or refusal
            return refusal
        if path == ADMIN_PREFIX + "audit" and method == "GET":
            return 200, _JSON, orjson.dumps({"audit": self._router.audit})
        if path == ADMIN_PREFIX + "state" and method == "GET":
            router = self._router
            state = {
                "scope": router.state_scope,
                "worker_pid": os.getpid(),
                "zone": router.state,
                "redis": router.redis,
            }
            return 200, _JSON, orjson.dumps(state)
        if path == ADMIN_PREFIX + "cells" and method == "GET":
            # Breakers are each worker's own: the answer names the worker.
            cells = {"worker_pid": os.getpid(), "cells": self._router.cells()}
            return 200, _JSON, orjson.dumps(cells)
        if path == ADMIN_PREFIX + "revocations":
            if method == "GET":
                return 200, _JSON, self._revocations()
            if method == "POST":
                return self._revoke(admin, body)
        customer = path.removeprefix(ADMIN_PREFIX + "revocations/customers/")
        if customer != path and customer and method == "DELETE":
            target = {"customer": customer}
            ok = 200, _JSON, b""
            refused = self._recorded(admin, "lift_customer_revocation", target, ok)
            if refused is not None:
                return refused
            lasting = self._lasting({"op": "lift_customer", "customer_id": customer})
            lifted = self._router.lift_customer_revocation(customer)
            answer = {
                "customer_id": customer,
                "lifted": lifted,
                "scope": self._router.state_scope,
                "lasting": lasting,
            }
            return 200, _JSON, orjson.dumps(answer)
        return problem(404, "not_found", "Not found", f"no admin route {method} {path}")

    def _revoke(self, admin: str, body: bytes) -> Response:
        request, refusal = _revocation(body)
        if request is None:
            target = {"body_bytes": len(body)}
            return self._recorded(admin, "revoke", target, refusal) or refusal
        if request.jti is not None:
            action, target = "revoke_token", {"jti": request.jti}
        else:
            action, target = "revoke_customer", {"customer": request.customer_id}
        refused = self._recorded(admin, action, target, (200, _JSON, b""))
        if refused is not None:
            return refused
        if request.jti is not None:
            entry = {"op": "revoke_token", "jti": request.jti}
            entry["forget_after_s"] = request.forget_after_s
            lasting = self._lasting(entry)
            self._router.revoke_token(request.jti, request.forget_after_s)
        else:
            entry = {"op": "revoke_customer", "customer_id": request.customer_id}
            entry["issued_before_s"] = request.issued_before_s
            lasting = self._lasting(entry)
            self._router.revoke_customer(request.customer_id or "", request.issued_before_s)
        return 200, _JSON, self._revocations(lasting)


def _revocation(body: bytes) -> tuple[Revocation | None, Response]:
    """The revocation ``body`` asks for, or None and its 400."""
    try:
        request = msgspec.json.decode(body, type=Revocation)
    except msgspec.ValidationError as err:
        return None, problem(400, "bad_revocation", "Bad revocation", str(err))
    except msgspec.DecodeError as err:
        return None, problem(400, "bad_revocation", "Bad revocation", f"not JSON: {err}")
    detail = None
    if (request.jti is None) == (request.customer_id is None):
        detail = "give either jti (with forget_after_s) or customer_id (with issued_before_s)"
    elif request.jti is not None and request.forget_after_s is None:
        detail = "forget_after_s is required with jti (the token's exp is a good value)"
    elif request.customer_id is not None and request.issued_before_s is None:
        detail = "issued_before_s is required with customer_id"
    if detail is not None:
        return None, problem(400, "bad_revocation", "Bad revocation", detail)
    return request, (200, _JSON, b"")


class Revocation(msgspec.Struct, forbid_unknown_fields=True):
    """A revocation request: a token by ``jti``, or a customer's tokens issued before a time."""

    jti: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    forget_after_s: Annotated[int, msgspec.Meta(ge=0)] | None = None
    customer_id: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    issued_before_s: float | None = None
