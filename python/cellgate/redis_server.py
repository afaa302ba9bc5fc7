"""A throwaway ``redis-server`` on a free loopback port, for tests and the demo.

:class:`RedisServer` runs Debian's ``redis-server`` (``bash scripts/install-test-deps.sh``
installs it) with no persistence, keeping its working directory and log in a directory of the
caller's choosing. The port is chosen once, so a server that is stopped and started again comes
back at the same URL, empty: nothing survives a restart.

Given :class:`RedisTls`, it serves TLS only (``rediss://``) and requires a client certificate
from the CA it is given.

It speaks just enough RESP over a raw socket to tell when the server is ready and to send a
test the odd command (:meth:`RedisServer.command`); cellgate itself talks to Redis through its
Rust core, so no Python Redis client is needed.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeAlias

__all__ = [
    "SEARCH_DIRS",
    "RedisError",
    "RedisReply",
    "RedisServer",
    "RedisServerFailed",
    "RedisServerMissing",
    "RedisTls",
    "find_redis_server",
]

HOST = "127.0.0.1"
# Where to look for redis-server besides PATH (Debian puts it in /usr/bin; a non-root PATH may
# lack the sbin directories).
SEARCH_DIRS: tuple[str, ...] = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class RedisTls:
    """TLS for the server: its certificate and key, the CA its clients' certificates must come
    from, and a client certificate and key of that CA for :class:`RedisServer`'s own checks."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    client_cert_file: Path
    client_key_file: Path

    def arguments(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert_file),
            "--tls-key-file", str(self.key_file),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
        return context


# A decoded RESP2 reply: a simple or bulk string, an integer as its decimal string, a list of
# replies for an array, or None for a nil reply.
RedisReply: TypeAlias = "str | list[RedisReply] | None"


class RedisServerMissing(RuntimeError):
    """No ``redis-server`` executable on PATH or in :data:`SEARCH_DIRS`."""


class RedisServerFailed(RuntimeError):
    """``redis-server`` exited, or did not answer, before it was ready; the message ends with
    the tail of its log."""


class RedisError(Exception):
    """Redis answered a command with an error reply (``-ERR ...``); the message is the reply."""


def find_redis_server() -> str:
    """The path of the ``redis-server`` executable, on PATH or in :data:`SEARCH_DIRS`."""
    path = shutil.which("redis-server") or shutil.which(
        "redis-server", path=os.pathsep.join(SEARCH_DIRS)
    )
    if path is None:
        raise RedisServerMissing(
            "redis-server is not installed: run `bash scripts/install-test-deps.sh` "
            "(or `apt-get install redis-server`)"
        )
    return path


def _free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _encode_command(args: tuple[str, ...]) -> bytes:
    """A command as RESP sends it: an array of bulk strings."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ConnectionError("redis-server closed the connection in the middle of a reply")
    return data


def _read_reply(stream: BinaryIO) -> RedisReply:
    """One RESP2 reply, decoded (see :data:`RedisReply`); an error reply raises
    :class:`RedisError`."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis-server closed the connection in the middle of a reply")
    kind, payload = line[:1], line[1:-2].decode(errors="replace")
    if kind in (b"+", b":"):
        return payload
    if kind == b"-":
        raise RedisError(payload)
    if kind == b"$":
        length = int(payload)
        if length < 0:
            return None
        return _read_exactly(stream, length + 2)[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(payload)
        if count < 0:
            return None
        return [_read_reply(stream) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line[:80]!r}")


def _send_command(
    port: int, args: tuple[str, ...], tls: ssl.SSLContext | None = None
) -> RedisReply:
    """Sends one command to the Redis on ``127.0.0.1:port`` over a fresh connection (over TLS
    with ``tls``)."""
    with socket.create_connection((HOST, port), timeout=COMMAND_TIMEOUT_S) as plain:
        sock = plain if tls is None else tls.wrap_socket(plain, server_hostname=HOST)
        with sock, sock.makefile("rb") as stream:
            sock.sendall(_encode_command(args))
            return _read_reply(stream)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILLs ``process`` unless it has already exited, and reaps it."""
    if process.poll() is None:
        process.kill()
    process.wait()


class RedisServer:
    """A ``redis-server`` process on ``127.0.0.1:port`` (a free port unless one is given),
    without persistence, with ``directory`` as its working directory and
    ``directory/redis.log`` as its log.

    Use it as a context manager, or call :meth:`start` and :meth:`stop` (as often as needed:
    each start comes back empty on the same port). A server still running when the object is
    collected, or when the interpreter exits, is killed.
    """

    def __init__(
        self, directory: Path, port: int | None = None, tls: RedisTls | None = None
    ) -> None:
        self.directory = Path(directory).resolve()
        self._port = _free_port() if port is None else port
        self._tls = tls
        self._client_tls = None if tls is None else tls.client_context()
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[[subprocess.Popen[bytes]], RedisServer] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "redis" if self._tls is None else "rediss"
        return f"{scheme}://{HOST}:{self._port}/0"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Launches redis-server and returns once it answers PING on :attr:`port`.

        Raises :class:`RedisServerMissing` when redis-server is not installed, and
        :class:`RedisServerFailed` when it exits or stays silent for ``READY_TIMEOUT_S``.
        """
        if self.running:
            raise RuntimeError(f"redis-server is already running on port {self._port}")
        self._forget_process()
        executable = find_redis_server()
        self.directory.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        listen = ["--port", str(self._port)]
        if self._tls is not None:
            listen = ["--port", "0", "--tls-port", str(self._port), *self._tls.arguments()]
        argv = [
            executable,
            *listen,
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--logfile", str(self.log_file),
            "--protected-mode", "yes",
        ]  # fmt: skip
        # What redis-server prints before its log is open (a bad argument, say) lands in the
        # same file: both append.
        with self.log_file.open("ab") as early_output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=early_output,
                stderr=early_output,
                start_new_session=True,
            )
        self._process = process
        self._reaper = weakref.finalize(self, _kill, process)
        self._wait_until_ready(process, log_offset)

    def _wait_until_ready(self, process: subprocess.Popen[bytes], log_offset: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._forget_process()
                raise RedisServerFailed(
                    f"redis-server exited with status {process.returncode} before it answered "
                    f"on port {self._port}; {self._log_tail(log_offset)}"
                )
            if self._answers_as(process.pid):
                return
            time.sleep(0.05)
        self.kill()
        raise RedisServerFailed(
            f"redis-server did not answer PING on port {self._port} within "
            f"{READY_TIMEOUT_S:g} s; {self._log_tail(log_offset)}"
        )

    def _answers_as(self, pid: int) -> bool:
        """Whether the Redis on :attr:`port` answers PING and is process ``pid``: another
        server that holds the port must not pass for ours."""
        try:
            if self.command("PING") != "PONG":
                return False
            info = self.command("INFO", "server")
        except (OSError, RedisError):
            return False
        return isinstance(info, str) and f"process_id:{pid}\r\n" in info

    def _log_tail(self, offset: int) -> str:
        """The last lines this run wrote to the log, as an error message ends."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError as error:
            return f"its log {self.log_file} could not be read: {error}"
        if not lines:
            return f"its log {self.log_file} is empty"
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        return f"the end of its log {self.log_file}:\n{tail}"

    def stop(self) -> None:
        """SIGTERMs redis-server and waits up to ``STOP_TIMEOUT_S`` for it, then SIGKILLs it;
        does nothing when it is not running."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill(process)
        self._forget_process()

    def kill(self) -> None:
        """SIGKILLs redis-server at once (a crash, as clients see it); does nothing when it is
        not running."""
        if self._process is not None:
            _kill(self._process)
        self._forget_process()

    def _forget_process(self) -> None:
        """Drops the (reaped) process and its kill-at-exit guard."""
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        self._process = None

    def command(self, *args: str) -> RedisReply:
        """Sends one command (``server.command("ZCARD", "cellgate:revoked:tokens")``) over a
        fresh connection and returns its decoded reply (see :data:`RedisReply`); an error reply
        raises :class:`RedisError`."""
        return _send_command(self._port, args, self._client_tls)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
