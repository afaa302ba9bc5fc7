"""A demo cell: a small HTTP/1.1 server standing in for one cell, one process per cell.

It echoes every ``/api/...`` request back as JSON (so tests can see where a request landed and
which headers the gateway sent), keeps a transfer ledger keyed by ``Idempotency-Key`` (so tests can
prove a transfer was never applied twice), and takes orders under ``/_cell/`` to fail, slow down,
hang, turn unhealthy or die. Pure asyncio, no HTTP library::

    python -m cellgate.demo.cell --id retail-us-east-1 --host 127.0.0.1 --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import http
import os
import posixpath
import re
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote

import orjson

from cellgate._core import RequestVerifier, SignatureError, verify_request
from cellgate.signing_keys import SIGNED_COMPONENTS as GATEWAY_SIGNED_COMPONENTS

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "Cell",
    "CellServer",
    "HttpError",
    "Ledger",
    "Mode",
    "Reply",
    "Request",
    "RequestReader",
    "main",
    "serve",
    "served_path",
    "start_cell",
]

MAX_HEAD_BYTES = 64 * 1024
"""The largest request line plus headers the cell reads; a larger head is answered 431."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""The largest request body the cell reads; a larger body is answered 413."""

_MAX_CHUNK_LINE_BYTES = 4096
_MAX_BUFFERED_BYTES = MAX_HEAD_BYTES + MAX_BODY_BYTES + _MAX_CHUNK_LINE_BYTES
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_FIELD_VALUE_FORBIDDEN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HTTP_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DECIMAL_DIGITS = re.compile(r"[0-9]{1,19}")
_ABSOLUTE_FORM = re.compile(r"https?://[^/?#]*", re.IGNORECASE)
_LINGER_S = 2.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


class HttpError(Exception):
    """A request refused at the protocol level; the connection is closed after the answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(slots=True)
class Request:
    """One parsed request: header names lower-cased, repeated headers joined with ``", "``.

    ``path`` is the path as the cell serves it, interpreted as common origin servers do
    (percent-decoded once, slashes merged, dot segments resolved); ``raw_path`` is the path as it
    arrived on the wire.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    raw_path: str = ""
    #: What a verified signature said (signed cells only).
    signature: dict[str, Any] | None = None


@dataclass(slots=True)
class _Head:
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    keep_alive: bool
    body_bytes: int | None  # None: chunked
    expects_continue: bool


class RequestReader:
    """Parses requests one at a time off the front of a connection's receive buffer.

    ``next_request`` consumes exactly one request's bytes once they have all arrived, so pipelined
    requests are read in order; it raises :class:`HttpError` for anything malformed or oversized.
    """

    def __init__(self, max_head_bytes: int = MAX_HEAD_BYTES, max_body_bytes: int = MAX_BODY_BYTES):
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.continue_expected = False
        """True while a client waits for ``100 Continue`` before sending the body it announced."""
        self._head: _Head | None = None
        self._chunked_body = bytearray()
        self._chunk_bytes_left: int | None = None  # None: a chunk-size line comes next
        self._in_trailers = False
        self._trailer_bytes = 0

    def next_request(self, buffer: bytearray) -> Request | None:
        """The next complete request, taken off the front of ``buffer``; None until it arrives."""
        if self._head is None:
            self._head = self._read_head(buffer)
            if self._head is None:
                return None
        head = self._head
        if head.body_bytes is None:
            if not self._read_chunks(buffer):
                return None
            body = bytes(self._chunked_body)
            self._chunked_body.clear()
        elif len(buffer) < head.body_bytes:
            return None
        else:
            body = bytes(buffer[: head.body_bytes])
            del buffer[: head.body_bytes]
        self._head = None
        self.continue_expected = False
        return Request(
            head.method,
            served_path(head.raw_path),
            head.query,
            head.headers,
            body,
            head.keep_alive,
            head.raw_path,
        )

    def _read_head(self, buffer: bytearray) -> _Head | None:
        # RFC 9112 section 2.2: ignore empty lines before the request line.
        while buffer[:2] == b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.max_head_bytes:
                raise HttpError(431, "request head too large")
            return None
        if end + 4 > self.max_head_bytes:
            raise HttpError(431, "request head too large")
        lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[: end + 4]
        head = self._parse_head(lines)
        self.continue_expected = head.expects_continue
        if head.body_bytes is None:
            self._chunk_bytes_left = None
            self._in_trailers = False
            self._trailer_bytes = 0
        return head

    def _parse_head(self, lines: list[bytes]) -> _Head:
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method):
            raise HttpError(400, "malformed method")
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            if _HTTP_VERSION.fullmatch(version):
                raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
            raise HttpError(400, "malformed HTTP version")
        if not _TARGET.fullmatch(target):
            raise HttpError(400, "malformed request target")
        headers = self._parse_fields(lines[1:])
        path, query = _split_target(target.decode("ascii"))
        is_http11 = version == b"HTTP/1.1"
        connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        keep_alive = "close" not in connection if is_http11 else "keep-alive" in connection
        body_bytes = self._body_framing(headers, is_http11)
        expects_continue = (
            is_http11 and body_bytes != 0 and headers.get("expect", "").lower() == "100-continue"
        )
        return _Head(
            method.decode("ascii"), path, query, headers, keep_alive, body_bytes, expects_continue
        )

    @staticmethod
    def _parse_fields(lines: list[bytes]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                # Also catches obsolete line folding (a line starting with whitespace).
                raise HttpError(400, "malformed header line")
            value = value.strip(b" \t")
            if _FIELD_VALUE_FORBIDDEN.search(value):
                raise HttpError(400, "control character in header value")
            key = name.decode("ascii").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return headers

    def _body_framing(self, headers: dict[str, str], is_http11: bool) -> int | None:
        """The body's length in bytes, or None for a chunked body."""
        transfer_encoding = headers.get("transfer-encoding")
        content_length = headers.get("content-length")
        if transfer_encoding is not None:
            if content_length is not None:
                raise HttpError(400, "both Transfer-Encoding and Content-Length")
            if not is_http11:
                raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [coding.strip().lower() for coding in transfer_encoding.split(",")]
            if codings != ["chunked"]:
                raise HttpError(501, "only Transfer-Encoding: chunked is supported")
            return None
        if content_length is None:
            return 0
        values = {value.strip() for value in content_length.split(",")}
        if len(values) != 1 or not _DECIMAL_DIGITS.fullmatch(length := values.pop()):
            raise HttpError(400, "malformed Content-Length")
        if int(length) > self.max_body_bytes:
            raise HttpError(413, "request body too large")
        return int(length)

    def _read_chunks(self, buffer: bytearray) -> bool:
        """Moves chunk data from ``buffer`` into the body; True once the last chunk has arrived."""
        while True:
            if self._in_trailers:
                line = self._take_line(buffer)
                if line is None:
                    return False
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > self.max_head_bytes:
                    raise HttpError(431, "chunked trailers too large")
                if not line:
                    return True
            elif self._chunk_bytes_left is None:
                line = self._take_line(buffer)
                if line is None:
                    return False
                size_text = line.split(b";", 1)[0].rstrip(b" \t")
                if not _HEX_DIGITS.fullmatch(size_text):
                    raise HttpError(400, "malformed chunk size")
                size = int(size_text, 16)
                if len(self._chunked_body) + size > self.max_body_bytes:
                    raise HttpError(413, "request body too large")
                self._chunk_bytes_left = size
                self._in_trailers = size == 0
            else:
                chunk_end = self._chunk_bytes_left
                if len(buffer) < chunk_end + 2:
                    return False
                if buffer[chunk_end : chunk_end + 2] != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
                self._chunked_body += buffer[:chunk_end]
                del buffer[: chunk_end + 2]
                self._chunk_bytes_left = None

    @staticmethod
    def _take_line(buffer: bytearray) -> bytes | None:
        end = buffer.find(b"\r\n", 0, _MAX_CHUNK_LINE_BYTES + 2)
        if end < 0:
            if len(buffer) > _MAX_CHUNK_LINE_BYTES:
                raise HttpError(400, "chunk line too long")
            return None
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line


def served_path(raw_path: str) -> str:
    """The path a raw one names to this server: percent-decoded once, repeated slashes merged,
    dot segments resolved, a trailing slash kept (what nginx and most origin servers do)."""
    decoded = unquote(raw_path, errors="replace")
    merged = re.sub("/+", "/", decoded)
    resolved = posixpath.normpath(merged) if merged != "/" else "/"
    trailing = merged.endswith(("/", "/.", "/..")) and resolved != "/"
    return resolved + "/" if trailing else resolved


def _split_target(target: str) -> tuple[str, str]:
    """(path, query) of an origin-form or absolute-form request target."""
    if not target.startswith("/"):
        absolute = _ABSOLUTE_FORM.match(target)
        if absolute is None:
            raise HttpError(400, "request target must be origin-form or absolute-form")
        target = target[absolute.end() :] or "/"
        if not target.startswith(("/", "?")):
            raise HttpError(400, "malformed request target")
    path, _, query = target.partition("?")
    return path or "/", query


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
            with open(path, "rb") as lines:
                for line in lines:
                    if not line.strip():
                        continue
                    entry = orjson.loads(line)
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
    """A response: status, JSON payload, extra header lines, and whether the process dies after."""

    status: int
    payload: dict[str, Any]
    extra_headers: bytes = b""
    exit_after: bool = False


Answer = Reply | Coroutine[Any, Any, Reply]
"""What :meth:`Cell.answer` returns: a reply now, or one that comes later (slow or hanging)."""


#: What a signed demo cell requires every signature to cover: all that the gateway always signs
#: (the request line and the identity it vouches for), and ``content-digest`` with a body.
SIGNED_COMPONENTS = (*GATEWAY_SIGNED_COMPONENTS, "content-digest")


class Cell:
    """The cell's behaviour, independent of sockets: routes, failure modes, ledger and counters.

    With ``verifier`` the cell is a signed cell: every ``/api/`` request must carry the gateway's
    RFC 9421 signature (checked with :func:`cellgate.verify_request`), else 401.
    """

    def __init__(
        self,
        cell_id: str,
        verifier: RequestVerifier | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.cell_id = cell_id
        self.verifier = verifier
        self.mode = Mode()
        self.ledger = ledger or Ledger()
        self.api_requests = 0
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
            return Reply(405, payload, b"allow: " + method.encode() + b"\r\n")
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
                scheme="http",
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
            return Reply(405, payload, b"allow: GET\r\n")
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


class _CellConnection(asyncio.Protocol):
    """One client connection: reads requests in order and answers each in turn (keep-alive)."""

    def __init__(self, cell: Cell, served_by_line: bytes, connections: set[_CellConnection]):
        self._cell = cell
        self._served_by_line = served_by_line
        self._connections = connections
        self._reader = RequestReader()
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._taking_requests = True
        self._pending: asyncio.Task[Reply] | None = None
        self._reading_paused = False
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._taking_requests = False
        self._connections.discard(self)
        if self._pending is not None:
            self._pending.cancel()

    def data_received(self, data: bytes) -> None:
        if not self._taking_requests:
            return
        self._buffer += data
        if len(self._buffer) > _MAX_BUFFERED_BYTES and self._transport is not None:
            self._transport.pause_reading()
            self._reading_paused = True
        self._answer_buffered()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._answer_buffered()

    def close(self) -> None:
        """Closes the connection, dropping any request still being answered."""
        if self._transport is not None:
            self._transport.close()

    def _answer_buffered(self) -> None:
        """Answers every complete buffered request, stopping at one that is answered later."""
        while self._taking_requests and self._pending is None and not self._writing_paused:
            try:
                request = self._reader.next_request(self._buffer)
            except HttpError as error:
                payload = {
                    "cell": self._cell.cell_id,
                    "error": "bad_request",
                    "detail": error.detail,
                }
                self._send(Reply(error.status, payload), keep_alive=False, head_only=False)
                return
            if request is None:
                if self._reader.continue_expected and self._transport is not None:
                    self._reader.continue_expected = False
                    self._transport.write(_CONTINUE)
                break
            answer = self._cell.answer(request)
            if isinstance(answer, Reply):
                self._send(answer, request.keep_alive, request.method == "HEAD")
            else:
                self._pending = asyncio.ensure_future(answer)
                self._pending.add_done_callback(lambda task, r=request: self._on_answered(r, task))
        if self._reading_paused and len(self._buffer) <= _MAX_BUFFERED_BYTES:
            self._reading_paused = False
            if self._transport is not None:
                self._transport.resume_reading()

    def _on_answered(self, request: Request, task: asyncio.Task[Reply]) -> None:
        self._pending = None
        if task.cancelled():
            return
        self._send(task.result(), request.keep_alive, request.method == "HEAD")
        self._answer_buffered()

    def _send(self, reply: Reply, keep_alive: bool, head_only: bool) -> None:
        transport = self._transport
        if transport is None or not self._taking_requests:
            return
        body = orjson.dumps(reply.payload)
        transport.write(
            b"HTTP/1.1 %d %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n%s%s%s\r\n%s"
            % (
                reply.status,
                _REASONS.get(reply.status, b"Unknown"),
                len(body),
                self._served_by_line,
                reply.extra_headers,
                b"" if keep_alive else b"connection: close\r\n",
                b"" if head_only else body,
            )
        )
        if reply.exit_after:
            self._taking_requests = False
            _exit_when_flushed(transport)
        elif not keep_alive:
            self._close_after_reply(transport)

    def _close_after_reply(self, transport: asyncio.Transport) -> None:
        """Half-closes once the reply is sent, then closes when the client does (or after a while).

        Closing at once with request bytes still unread would reset the connection, and a reset can
        destroy the reply before the client reads it (a 413 in answer to a body still arriving).
        """
        self._taking_requests = False
        self._buffer.clear()
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_LINGER_S, transport.close)
        else:
            transport.close()


def _exit_when_flushed(transport: asyncio.Transport, tries_left: int = 50) -> None:
    """Ends the process the hard way (a crash, not a shutdown) once ``transport`` is flushed."""
    if transport.get_write_buffer_size() and tries_left:
        asyncio.get_running_loop().call_later(0.01, _exit_when_flushed, transport, tries_left - 1)
        return
    sys.stdout.flush()
    os._exit(1)


@dataclass
class CellServer:
    """A listening cell: its behaviour, the bound address and its open connections."""

    cell: Cell
    host: str
    port: int
    server: asyncio.Server
    connections: set[_CellConnection]

    @property
    def url(self) -> str:
        """The base URL the cell answers on."""
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Stops listening and closes every connection, dropping requests still being answered."""
        self.server.close()
        for connection in list(self.connections):
            connection.close()
        await self.server.wait_closed()


async def start_cell(
    cell_id: str,
    host: str = "127.0.0.1",
    port: int = 0,
    verify_keys: list[dict[str, Any]] | None = None,
    ledger_path: str | None = None,
) -> CellServer:
    """Starts a cell listening on ``host:port`` (0: any free port) and returns it; with
    ``verify_keys`` it is a signed cell accepting signatures made with any of them; with
    ``ledger_path`` its transfers are kept in that file across restarts."""
    verifier = RequestVerifier(verify_keys, required=SIGNED_COMPONENTS) if verify_keys else None
    ledger = Ledger.load(ledger_path) if ledger_path else None
    cell = Cell(cell_id, verifier, ledger)
    connections: set[_CellConnection] = set()
    served_by_line = b"x-served-by: " + cell_id.encode("latin-1") + b"\r\n"
    server = await asyncio.get_running_loop().create_server(
        lambda: _CellConnection(cell, served_by_line, connections), host, port, reuse_address=True
    )
    bound_port = server.sockets[0].getsockname()[1]
    return CellServer(cell, host, bound_port, server, connections)


async def serve(
    cell_id: str,
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    verify_keys: list[dict[str, Any]] | None = None,
    ledger_path: str | None = None,
) -> None:
    """Runs a cell until ``stop`` is set (or the task is cancelled).

    Once listening it prints ``cell <id> listening on http://host:port`` and sets ``ready``.
    """
    cell_server = await start_cell(cell_id, host, port, verify_keys, ledger_path)
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
    await serve(
        args.cell_id,
        args.host,
        args.port,
        stop=stop,
        verify_keys=args.verify_key,
        ledger_path=args.ledger,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cellgate.demo.cell",
        description="Run one demo cell: an HTTP/1.1 echo server with a transfer ledger and "
        "failure injection under /_cell/.",
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
    """Runs one cell until SIGTERM or SIGINT; 0 on a clean stop, 1 if it cannot listen."""
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_serve_until_signalled(args))
    except OSError as error:
        print(
            f"cell {args.cell_id}: cannot listen on {args.host}:{args.port}: {error}",
            file=sys.stderr,
        )
        return 1
    except ValueError as error:
        print(f"cell {args.cell_id}: --verify-key: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
