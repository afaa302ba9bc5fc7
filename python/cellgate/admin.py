"""The admin API under ``/_cellgate/``: liveness for load balancers, live cell state and token
revocation for operators.

Everything but ``/_cellgate/health`` needs an admin bearer token: HS256, audience
``cellgate-admin``, signed with ``[admin] secret``. Without an ``[admin]`` section those routes
answer 404. Cell state and revocations are this worker's own (each granian worker keeps its own
until shared state lands; see the README).

    GET    /_cellgate/health                      liveness, no token
    GET    /_cellgate/cells                       live cell state
    GET    /_cellgate/revocations                 {"tokens": n, "customers": m}
    POST   /_cellgate/revocations                 {"jti": "...", "forget_after_s": 1767225600}
                                                  or {"customer_id": "...", "issued_before_s": T}
    DELETE /_cellgate/revocations/customers/{id}  lifts a customer's revocation
"""

from __future__ import annotations

from typing import Annotated

import jwt
import msgspec
import orjson

from cellgate import _core
from cellgate.problems import Response, problem

__all__ = ["ADMIN_AUDIENCE", "ADMIN_PREFIX", "AdminApi"]

ADMIN_PREFIX = "/_cellgate/"
ADMIN_AUDIENCE = "cellgate-admin"
_JSON = [("content-type", "application/json"), ("cache-control", "no-store")]


class AdminApi:
    """Answers admin requests for one router."""

    def __init__(self, router: _core.Router, secret: bytes | None) -> None:
        self._router = router
        self._secret = secret

    def _authorize(self, authorization: str | None) -> Response | None:
        if self._secret is None:
            return problem(404, "not_found", "Not found", "the admin API is not configured")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return problem(
                401, "admin_token_required", "Admin token required", "send Bearer <admin token>"
            )
        try:
            jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                audience=ADMIN_AUDIENCE,
                options={"require": ["exp", "aud"]},
            )
        except jwt.InvalidTokenError as err:
            return problem(401, "admin_token_invalid", "Admin token refused", str(err))
        return None

    def handle(
        self, method: str, path: str, authorization: str | None, body: bytes = b""
    ) -> Response:
        """The answer to an admin request."""
        if path == ADMIN_PREFIX + "health":
            return 200, _JSON, b'{"status":"ok"}'
        refusal = self._authorize(authorization)
        if refusal is not None:
            return refusal
        if path == ADMIN_PREFIX + "cells" and method == "GET":
            return 200, _JSON, orjson.dumps({"cells": self._router.cells()})
        if path == ADMIN_PREFIX + "revocations":
            if method == "GET":
                return 200, _JSON, orjson.dumps(self._router.revocations)
            if method == "POST":
                return self._revoke(body)
        customer = path.removeprefix(ADMIN_PREFIX + "revocations/customers/")
        if customer != path and customer and method == "DELETE":
            lifted = self._router.lift_customer_revocation(customer)
            return 200, _JSON, orjson.dumps({"customer_id": customer, "lifted": lifted})
        return problem(404, "not_found", "Not found", f"no admin route {method} {path}")

    def _revoke(self, body: bytes) -> Response:
        try:
            request = msgspec.json.decode(body, type=Revocation)
        except msgspec.ValidationError as err:
            return problem(400, "bad_revocation", "Bad revocation", str(err))
        except msgspec.DecodeError as err:
            return problem(400, "bad_revocation", "Bad revocation", f"not JSON: {err}")
        if (request.jti is None) == (request.customer_id is None):
            detail = "give either jti (with forget_after_s) or customer_id (with issued_before_s)"
            return problem(400, "bad_revocation", "Bad revocation", detail)
        if request.jti is not None:
            if request.forget_after_s is None:
                detail = "forget_after_s is required with jti (the token's exp is a good value)"
                return problem(400, "bad_revocation", "Bad revocation", detail)
            self._router.revoke_token(request.jti, request.forget_after_s)
        else:
            if request.issued_before_s is None:
                detail = "issued_before_s is required with customer_id"
                return problem(400, "bad_revocation", "Bad revocation", detail)
            self._router.revoke_customer(request.customer_id or "", request.issued_before_s)
        return 200, _JSON, orjson.dumps(self._router.revocations)


class Revocation(msgspec.Struct, forbid_unknown_fields=True):
    """A revocation request: a token by ``jti``, or a customer's tokens issued before a time."""

    jti: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    forget_after_s: Annotated[int, msgspec.Meta(ge=0)] | None = None
    customer_id: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    issued_before_s: float | None = None
