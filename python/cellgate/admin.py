"""The admin API under ``/_cellgate/``: liveness for load balancers, live cell state for operators.

Everything but ``/_cellgate/health`` needs an admin bearer token: HS256, audience
``cellgate-admin``, signed with ``[admin] secret``. Without an ``[admin]`` section those routes
answer 404. Cell state is this worker's own view (each granian worker keeps its own).
"""

from __future__ import annotations

import jwt
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

    def handle(self, method: str, path: str, authorization: str | None) -> Response:
        """The answer to an admin request."""
        if path == ADMIN_PREFIX + "health":
            return 200, _JSON, b'{"status":"ok"}'
        refusal = self._authorize(authorization)
        if refusal is not None:
            return refusal
        if path == ADMIN_PREFIX + "cells" and method == "GET":
            return 200, _JSON, orjson.dumps({"cells": self._router.cells()})
        return problem(404, "not_found", "Not found", f"no admin route {method} {path}")
