"""A demo cell: an HTTP/1.1 server standing in for one cell, one process per cell, served by
granian (embedded in the process's own asyncio loop, ASGI), over TLS with a required client
certificate when told.

It echoes every ``/api/...`` request back as JSON (so tests can see where a request landed, which
headers the gateway sent and the path exactly as it arrived on the wire), keeps a transfer ledger
keyed by ``Idempotency-Key`` (so tests can prove a transfer was never applied twice), verifies
the gateway's RFC 9421 signatures when given keys, and takes orders under ``/_cell/`` to fail,
slow down, hang, turn unhealthy or die::

    python -m cellgate.demo.cell --id retail-us-east-1 --host 127.0.0.1 --port 9101
    python -m cellgate.demo.cell --id hnw-us-east-1 --port 9104 \\
        --tls-cert cell.pem --tls-key cell.key --tls-client-ca ca.pem

granian parses HTTP/1.1 (keep-alive, pipelining, chunked bodies, ``Expect: 100-continue``) and
answers malformed requests itself; the ASGI scope's ``raw_path`` gives the path as sent, which
signatures cover and tests compare with what the gateway's rules saw.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import posixpath
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

import orjson

from cellgate._core import RequestVerifier, SignatureError, verify_request
from cellgate.signing_keys import SIGNED_COMPONENTS as GATEWAY_SIGNED_COMPONENTS

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "Cell",
    "CellApp",
    "CellServer",
    "CellTls",
    "Ledger",
    "Mode",
    "Reply",
    "Request",
    "main",
    "serve",
    "served_path",
    "start_cell",
]

MAX_HEAD_BYTES = 64 * 1024
"""The most header bytes (names and values) the cell takes; more is answered 431."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest request body the cell reads; a larger body is answered 413."""

_EXIT_AFTER_S = 0.1
"""How long a dying cell gives granian to write its last answer before the process ends."""


@dataclass(slots=True)
class Request:
    """One request: header names lower-cased, repeated headers joined with ``", "``.

    ``path`` is the path as the cell serves it, interpreted as common origin servers do
    (percent-decoded once, slashes merged, dot segments resolved); ``raw_path`` is the path as it
    arrived on the wire.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    raw_path: str = ""
    #: What a verified signature said (signed cells only).
    signature: dict[str, Any] | None = None


def served_path(raw_path: str) -> str:
    """The path a raw one names to this server: percent-decoded once, repeated slashes merged,
    dot segments resolved, a trailing slash kept (what nginx and most origin servers do)."""
    decoded = unquote(raw_path, errors="replace")
    merged = re.sub("/+", "/", decoded)
    resolved = posixpath.normpath(merged) if merged != "/" else "/"
    trailing = merged.endswith(("/", "/.", "/..")) and resolved != "/"
    return resolved + "/" if trailing else resolved


@dataclass(slots=True)
class Mode:
    """How the cell misbehaves right now; the default is behaving."""

    fail_status: int | None = None
    unhealthy: bool = False
    slow_ms: int = 0
    hang: bool = False

    def as_json(self) -> dict[str, Any]:
        """The mode as a JSON-ready dict."""
        return {
            "fail_status": self.fail_status,
            "unhealthy": self.unhealthy,
            "slow_ms": self.slow_ms,
            "hang": self.hang,
        }


@dataclass(slots=True)
class Ledger:
    """Transfers applied, and what each ``Idempotency-Key`` has seen
    (draft-ietf-httpapi-idempotency-key-header): the first request with a key is applied and its
    answer kept; a repeat with the same body gets that answer again, a repeat with another body
    gets 422, and a repeat while the first is still being answered gets 409."""

    applied: int = 0
    attempts_by_key: dict[str, int] = field(default_factory=dict)
    #: Per key: the fingerprint of the first request's body, and its answer once it was given.
    entries: dict[str, tuple[str, Reply | None]] = field(default_factory=dict)
    #: Where applied transfers are appended, one JSON line each, so that a restarted cell
    #: still knows them (None: memory only).
    path: str | None = None

    @classmethod
    def load(cls, path: str) -> Ledger:
        """The ledger kept in ``path``: what it holds is applied and answered; new transfers are
        appended to it."""
        ledger = cls(path=path)
        if os.path.exists(path):
            with open(path, "rb") as file:
                text = file.read()
            whole = text[: text.rfind(b"\n") + 1]
            if len(whole) < len(text):
                # A line cut short by a kill was never whole, so its answer never left: the
                # transfer was not applied. The next append starts on a clean line.
                os.truncate(path, len(whole))
            for number, line in enumerate(whole.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    raise ValueError(f"--ledger {path}: line {number}: {err}") from None
                ledger.applied += 1
                key = entry["key"]
                if key is not None:
                    reply = Reply(entry["status"], entry["payload"])
                    ledger.entries[key] = (entry["fingerprint"], reply)
                    ledger.attempts_by_key[key] = ledger.attempts_by_key.get(key, 0) + 1
        return ledger

    def keep(self, key: str | None, body: bytes, reply: Reply) -> None:
        """Writes an applied transfer and its answer down (one append of one line), before the
        answer leaves: a cell killed after this has the transfer on its books."""
        if self.path is None:
            return
        line = orjson.dumps(
            {
                "key": key,
                "fingerprint": hashlib.sha256(body).hexdigest(),
                "body": body.decode("utf-8", "replace"),
                "status": reply.status,
                "payload": reply.payload,
            }
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)

    def begin(self, key: str | None, body: bytes) -> Reply | None:
        """Counts one transfer attempt. None: apply it (then :meth:`finish` it, when keyed);
        otherwise the answer this attempt gets instead (a replay, a 409 or a 422)."""
        if key is None:
            self.applied += 1
            return None
        self.attempts_by_key[key] = self.attempts_by_key.get(key, 0) + 1
        fingerprint = hashlib.sha256(body).hexdigest()
        entry = self.entries.get(key)
        if entry is None:
            self.entries[key] = (fingerprint, None)
            self.applied += 1
            return None
        first_fingerprint, first_reply = entry
        if first_fingerprint != fingerprint:
            detail = "this Idempotency-Key was first used with another request body"
            return Reply(422, {"error": "idempotency_key_reused", "detail": detail})
        if first_reply is None:
            detail = "the first request with this Idempotency-Key is still being answered"
            return Reply(409, {"error": "idempotency_key_in_flight", "detail": detail})
        payload = {**first_reply.payload, "applied": False, "replayed": True}
        return first_reply._replace(payload=payload)

    def finish(self, key: str, reply: Reply) -> None:
        """Keeps the answer of the first request with ``key``, for its repeats."""
        fingerprint, _ = self.entries[key]
        self.entries[key] = (fingerprint, reply)


class Reply(NamedTuple):
    """A response: status, JSON payload, extra headers, and whether the process dies after."""

    status: int
    payload: dict[str, Any]
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()
    exit_after: bool = False


Answer = Reply | Coroutine[Any, Any, Reply]
"""What :meth:`Cell.answer` returns: a reply now, or one that comes later (slow or hanging)."""


#: What a signed demo cell requires every signature to cover: all that the gateway always signs
#: (the request line and the identity it vouches for), and ``content-digest`` with a body.
SIGNED_COMPONENTS = (*GATEWAY_SIGNED_COMPONENTS, "content-digest")


class Cell:
    """The cell's behaviour, independent of sockets: routes, failure modes, ledger and counters.

    With ``verifier`` the cell is a signed cell: every ``/api/`` request must carry the gateway's
    RFC 9421 signature (checked with :func:`cellgate.verify_request`), else 401. ``scheme`` is
    what the cell is reached by (``https`` for a TLS cell), for the signature's view of it.
    """

    def __init__(
        self,
        cell_id: str,
        verifier: RequestVerifier | None = None,
        ledger: Ledger | None = None,
        scheme: str = "http",
    ) -> None:
        self.cell_id = cell_id
        self.verifier = verifier
        self.scheme = scheme
        self.mode = Mode()
        self.ledger = ledger or Ledger()
        self.api_requests = 0
        self.health_checks = 0
        self.in_flight = 0
        self._hang_released = asyncio.Event()
        self._control_routes: dict[str, tuple[str, Callable[[Request], Reply]]] = {
            "/_cell/fail": ("POST", self._fail),
            "/_cell/unhealthy": ("POST", self._unhealthy),
            "/_cell/slow": ("POST", self._slow),
            "/_cell/hang": ("POST", self._hang),
            "/_cell/reset": ("POST", self._reset),
            "/_cell/die": ("POST", self._die),
            "/_cell/stats": ("GET", self._stats),
            "/_cell/ledger": ("GET", self._ledger),
        }

    def answer(self, request: Request) -> Answer:
        """The reply to ``request``; a coroutine when the cell is told to be slow or to hang."""
        path = request.path
        if path.startswith("/api/") or path == "/api":
            refused = self._refused_signature(request)
            return refused or self._api(request)
        if path == "/health":
            return self._health(request)
        route = self._control_routes.get(path)
        if route is None:
            payload = {"cell": self.cell_id, "error": "not_found", "path": path}
            return Reply(404, {**payload, "raw_path": request.raw_path})
        method, handler = route
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            payload = {"cell": self.cell_id, "error": "method_not_allowed", "allow": method}
            return Reply(405, payload, ((b"allow", method.encode()),))
        return handler(request)

    def _refused_signature(self, request: Request) -> Reply | None:
        """The 401 for a request whose signature fails verification; None when it verifies or
        the cell is not signed."""
        if self.verifier is None:
            return None
        try:
            request.signature = verify_request(
                self.verifier,
                request.method,
                request.headers.get("host", ""),
                request.raw_path,
                request.query,
                list(request.headers.items()),
                request.body,
                scheme=self.scheme,
            )
        except SignatureError as refused:
            payload = {
                "cell": self.cell_id,
                "error": "signature_refused",
                "reason": refused.reason,
                "detail": refused.detail,
            }
            return Reply(401, payload)
        return None

    def _health(self, request: Request) -> Reply:
        if request.method not in ("GET", "HEAD"):
            payload = {"cell": self.cell_id, "error": "method_not_allowed", "allow": "GET"}
            return Reply(405, payload, ((b"allow", b"GET"),))
        self.health_checks += 1
        if self.mode.unhealthy:
            return Reply(503, {"cell": self.cell_id, "status": "failing"})
        return Reply(200, {"cell": self.cell_id, "status": "ok"})

    def _api(self, request: Request) -> Answer:
        """Decides on arrival (ledger included); a slow or hanging cell only delays the answer.

        A transfer taken by a hanging or slow cell is applied even if its answer never arrives:
        exactly the case an ``Idempotency-Key`` protects against when the caller tries again.
        """
        self.api_requests += 1
        if self.mode.fail_status is not None:
            return self._later_if_told(
                Reply(self.mode.fail_status, {"cell": self.cell_id, "error": "injected"}), None
            )
        key = None
        if request.method == "POST" and (
            request.path == "/api/transfers" or request.path.startswith("/api/transfers/")
        ):
            key = request.headers.get("idempotency-key")
            instead = self.ledger.begin(key, request.body)
            if instead is not None:
                return Reply(instead.status, {**instead.payload, "cell": self.cell_id})
            reply = Reply(200, {**self._echo(request), "applied": True})
            self.ledger.keep(key, request.body, reply)
        else:
            reply = Reply(200, self._echo(request))
        return self._later_if_told(reply, key)

    def _later_if_told(self, reply: Reply, key: str | None) -> Answer:
        """``reply`` now, or after the slowness or hang the cell was told to show; the ledger
        keeps a keyed transfer's answer once it is given."""
        if self.mode.hang or self.mode.slow_ms:
            released = self._hang_released if self.mode.hang else None
            return self._answer_later(reply, released, self.mode.slow_ms, key)
        if key is not None:
            self.ledger.finish(key, reply)
        return reply

    def _echo(self, request: Request) -> dict[str, Any]:
        echo: dict[str, Any] = {
            "cell": self.cell_id,
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "query": request.query,
            "headers": request.headers,
            "body_bytes": len(request.body),
            "body_sha256": hashlib.sha256(request.body).hexdigest(),
        }
        if request.signature is not None:
            echo["signature"] = {
                "keyid": request.signature["keyid"],
                "alg": request.signature["alg"],
                "covered": request.signature["covered"],
            }
        return echo

    async def _answer_later(
        self, reply: Reply, released: asyncio.Event | None, slow_ms: int, key: str | None
    ) -> Reply:
        self.in_flight += 1
        try:
            if released is not None:
                await released.wait()
            if slow_ms:
                await asyncio.sleep(slow_ms / 1000)
            return reply
        finally:
            self.in_flight -= 1
            # Decided on arrival: applied, whether or not the caller is still there to hear it.
            if key is not None:
                self.ledger.finish(key, reply)

    def _mode_reply(self) -> Reply:
        return Reply(200, {"cell": self.cell_id, "mode": self.mode.as_json()})

    def _fail(self, request: Request) -> Reply:
        status = _query_int(request.query, "status", default=500)
        if status is None or not 200 <= status <= 599:
            return _bad_control(self.cell_id, "status must be an integer from 200 to 599")
        self.mode.fail_status = status
        return self._mode_reply()

    def _unhealthy(self, request: Request) -> Reply:
        self.mode.unhealthy = True
        return self._mode_reply()

    def _slow(self, request: Request) -> Reply:
        slow_ms = _query_int(request.query, "ms", default=None)
        if slow_ms is None or not 0 <= slow_ms <= 600_000:
            return _bad_control(self.cell_id, "ms must be an integer from 0 to 600000")
        self.mode.slow_ms = slow_ms
        return self._mode_reply()

    def _hang(self, request: Request) -> Reply:
        if not self.mode.hang:
            self._hang_released = asyncio.Event()
        self.mode.hang = True
        return self._mode_reply()

    def _reset(self, request: Request) -> Reply:
        """Back to normal: requests held by a hang are released and answered."""
        self.mode = Mode()
        self._hang_released.set()
        return self._mode_reply()

    def _die(self, request: Request) -> Reply:
        return Reply(200, {"cell": self.cell_id, "dying": True}, exit_after=True)

    def _stats(self, request: Request) -> Reply:
        payload = {
            "cell": self.cell_id,
            "requests": self.api_requests,
            "health_checks": self.health_checks,
            "in_flight": self.in_flight,
            "mode": self.mode.as_json(),
        }
        return Reply(200, payload)

    def _ledger(self, request: Request) -> Reply:
        return Reply(200, {"applied": self.ledger.applied, "keys": self.ledger.attempts_by_key})


def _query_int(query: str, name: str, default: int | None) -> int | None:
    """The integer query parameter ``name``; ``default`` when absent, None when not an integer."""
    values = parse_qs(query).get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        return None


def _bad_control(cell_id: str, detail: str) -> Reply:
    return Reply(400, {"cell": cell_id, "error": "bad_request", "detail": detail})


class _ClientGone(Exception):
    """The client closed its connection before the cell answered."""


class _TooLarge(Exception):
    """The request body is over :data:`MAX_BODY_BYTES`."""


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes:
    """The whole request body, at most :data:`MAX_BODY_BYTES` of it."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _until_gone(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns once the client has closed its connection (the body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _declared_length(headers: dict[str, str]) -> int:
    """The Content-Length a request announces (granian refuses a malformed one before the
    application runs; 0 for anything else it let through)."""
    try:
        return int(headers.get("content-length", "0"))
    except ValueError:
        return 0


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class CellApp:
    """The cell as an ASGI application: each request read whole, answered by :class:`Cell`; an
    answer that comes later (slow, hanging) is dropped when its client goes away first."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        self._served_by = cell.cell_id.encode("latin-1")
        #: Answers still being waited for, cancelled when the cell stops.
        self._pending: set[asyncio.Future[Reply]] = set()
        #: Set when the cell stops: what is still waited for is answered 503 at once.
        self._stopping = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return
        refused = self._refused_head(scope)
        if refused is not None:
            await self._send(send, refused, head_only=False)
            return
        headers = _headers(scope)
        try:
            if _declared_length(headers) > MAX_BODY_BYTES:
                raise _TooLarge
            body = await _read_body(receive)
        except _TooLarge:
            refused = self._refusal(413, "request body too large")
            await self._send(send, refused, head_only=False)
            return
        except _ClientGone:
            # granian also ends a malformed chunked body this way; a client that left hears nothing.
            refused = self._refusal(400, "the request body was cut short or malformed")
            await self._send(send, refused, head_only=False)
            return
        raw_path = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        request = Request(
            scope["method"],
            served_path(raw_path),
            scope["query_string"].decode("latin-1"),
            headers,
            body,
            raw_path,
        )
        answer = self.cell.answer(request)
        if not isinstance(answer, Reply):
            answer = await self._later(answer, receive)
            if answer is None:
                return
        await self._send(send, answer, head_only=request.method == "HEAD")
        if answer.exit_after:
            asyncio.get_running_loop().call_later(_EXIT_AFTER_S, _exit_hard)

    async def _later(self, answer: Coroutine[Any, Any, Reply], receive) -> Reply | None:
        """The answer once it comes; None when the client went away first (the answer is then
        cancelled, as a closed connection would have it)."""
        reply = asyncio.ensure_future(answer)
        gone = asyncio.ensure_future(_until_gone(receive))
        stopping = asyncio.ensure_future(self._stopping.wait())
        self._pending.add(reply)
        try:
            await asyncio.wait((reply, gone, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._pending.discard(reply)
            gone.cancel()
            stopping.cancel()
        if reply.done():
            return reply.result()
        reply.cancel()
        if self._stopping.is_set():
            payload = {"cell": self.cell.cell_id, "error": "stopping"}
            return Reply(503, payload, ((b"connection", b"close"),))
        return None

    async def drop_pending(self, within_s: float = 2.0) -> None:
        """Answers every request still waiting 503 (the cell is stopping), and waits until
        those answers are sent, for at most ``within_s``."""
        self._stopping.set()
        deadline = asyncio.get_running_loop().time() + within_s
        while self._pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        # Let the answers leave before the server closes their connections.
        await asyncio.sleep(0.05)

    def _refused_head(self, scope: dict[str, Any]) -> Reply | None:
        """431 for a request whose headers are over :data:`MAX_HEAD_BYTES`."""
        head_bytes = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head_bytes <= MAX_HEAD_BYTES:
            return None
        return self._refusal(431, "request head too large")

    def _refusal(self, status: int, detail: str) -> Reply:
        """A refusal of the request itself; the connection is closed after it."""
        payload = {"cell": self.cell.cell_id, "error": "bad_request", "detail": detail}
        return Reply(status, payload, ((b"connection", b"close"),))

    async def _send(self, send, reply: Reply, head_only: bool) -> None:
        body = orjson.dumps(reply.payload)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-served-by", self._served_by),
            *reply.extra_headers,
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head_only else body})


def _exit_hard() -> None:
    """Ends the process the hard way: a crash, not a shutdown."""
    sys.stdout.flush()
    os._exit(1)


@dataclass(frozen=True)
class CellTls:
    """The cell's TLS: its certificate chain and key (PKCS#8 PEM), and with ``client_ca_file``
    a client certificate it requires, which must chain to that CA."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def _claim_port(host: str, port: int) -> int:
    """``port`` (0: a free one) once it is known to be free on ``host``; OSError when another
    process listens there. granian binds with SO_REUSEPORT, which would otherwise let a second
    cell share a port silently."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return probe.getsockname()[1]


@dataclass
class CellServer:
    """A listening cell: its behaviour, its address, and the granian server serving it."""

    cell: Cell
    host: str
    port: int
    tls: CellTls | None
    app: CellApp
    server: Any
    task: asyncio.Task[None]
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The base URL the cell answers on."""
        scheme = "https" if self.tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def close(self) -> None:
        """Stops listening and closes every connection; requests still waiting for an answer
        are answered 503 first."""
        if self._closed:
            return
        self._closed = True
        await self.app.drop_pending()
        self.server.stop()
        await self.task


async def start_cell(
    cell_id: str,
    host: str = "127.0.0.1",
    port: int = 0,
    verify_keys: list[dict[str, Any]] | None = None,
    ledger_path: str | None = None,
    tls: CellTls | None = None,
) -> CellServer:
    """Starts a cell listening on ``host:port`` (0: a port found free just before) and returns
    it once it listens; with ``verify_keys`` it is a signed cell accepting signatures made with
    any of them; with ``ledger_path`` its transfers are kept in that file across restarts; with
    ``tls`` it speaks only TLS. OSError when it cannot listen."""
    from granian.constants import HTTPModes, Interfaces
    from granian.server.common import SSLProtocols
    from granian.server.embed import Server

    try:
        verifier = RequestVerifier(verify_keys, required=SIGNED_COMPONENTS) if verify_keys else None
    except ValueError as err:
        raise ValueError(f"--verify-key: {err}") from None
    ledger = Ledger.load(ledger_path) if ledger_path else None
    cell = Cell(cell_id, verifier, ledger, scheme="https" if tls is not None else "http")
    app = CellApp(cell)
    port = _claim_port(host, port)
    options: dict[str, Any] = {}
    if tls is not None:
        options = {
            "ssl_cert": tls.cert_file,
            "ssl_key": tls.key_file,
            "ssl_protocol_min": SSLProtocols.tls12,
            "ssl_ca": tls.client_ca_file,
            "ssl_client_verify": tls.client_ca_file is not None,
        }
    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGINL,
        http=HTTPModes.http1,
        websockets=False,
        backlog=1024,
        log_enabled=False,
        **options,
    )
    listening = asyncio.Event()
    server.on_startup(listening.set)
    task = asyncio.create_task(server.serve())
    ready = asyncio.create_task(listening.wait())
    await asyncio.wait((task, ready), return_when=asyncio.FIRST_COMPLETED)
    if not listening.is_set():
        ready.cancel()
        error = task.exception() if not task.cancelled() else None
        raise OSError(f"granian did not start: {error}")
    return CellServer(cell, host, port, tls, app, server, task)


async def serve(
    cell_id: str,
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    verify_keys: list[dict[str, Any]] | None = None,
    ledger_path: str | None = None,
    tls: CellTls | None = None,
) -> None:
    """Runs a cell until ``stop`` is set (or the task is cancelled).

    Once listening it prints ``cell <id> listening on http(s)://host:port`` and sets ``ready``.
    """
    cell_server = await start_cell(cell_id, host, port, verify_keys, ledger_path, tls)
    try:
        print(f"cell {cell_id} listening on {cell_server.url}", flush=True)
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Future())
    finally:
        await cell_server.close()


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tls = None
    if args.tls_cert is not None:
        tls = CellTls(args.tls_cert, args.tls_key, args.tls_client_ca)
    await serve(
        args.cell_id,
        args.host,
        args.port,
        stop=stop,
        verify_keys=args.verify_key,
        ledger_path=args.ledger,
        tls=tls,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cellgate.demo.cell",
        description="Run one demo cell: an HTTP/1.1 echo server (granian) with a transfer ledger"
        " and failure injection under /_cell/.",
    )
    parser.add_argument(
        "--id", required=True, dest="cell_id", help="the cell's id, e.g. retail-us-east-1"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=9101,
        help="port to listen on, 0 for any free port (default: %(default)s)",
    )
    parser.add_argument(
        "--verify-key",
        action="append",
        default=[],
        type=_key_argument,
        metavar="JSON",
        help="a key the gateway signs with, as JSON ({keyid, alg, jwk | spki_b64 | secret_b64});"
        " with one or more the cell refuses, with 401, any /api/ request whose RFC 9421"
        " signature fails verification",
    )
    parser.add_argument(
        "--ledger",
        metavar="FILE",
        help="keep the transfer ledger in FILE (JSON lines), so that a restarted cell still"
        " knows every transfer it applied and every Idempotency-Key it answered",
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="speak TLS with this certificate (PEM)"
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the certificate's key (PKCS#8 PEM)"
    )
    parser.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="require a client certificate issued by this CA (PEM): mTLS",
    )
    return parser


def _key_argument(text: str) -> dict[str, Any]:
    try:
        key = orjson.loads(text)
    except orjson.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(key, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return key


def main(argv: list[str] | None = None) -> int:
    """Runs one cell until SIGTERM or SIGINT; 0 on a clean stop, 1 if it cannot listen, 2 for
    bad arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    try:
        asyncio.run(_serve_until_signalled(args))
    except OSError as error:
        print(
            f"cell {args.cell_id}: cannot listen on {args.host}:{args.port}: {error}",
            file=sys.stderr,
        )
        return 1
    except ValueError as error:
        # A verify key or the ledger that cannot be used; the message names which.
        print(f"cell {args.cell_id}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
