"""A writer of the audit trail in plain Python: the reference of ``rust/audit/``.

It writes exactly the bytes ``python/cellgate/audit/FORMAT.md`` describes (records chained by
SHA-256, segments, signed digests, retention entries, crash recovery), so that the Rust writer
can be compared with it line for line and the tools' tests can build trails quickly. Nothing in
the request path uses it. Time is never read here: every writer takes ``clock``, a callable that
returns microseconds since the Unix epoch (UTC). It is read once on opening (the start of the
first digest interval, and the time of a recovery digest), once per record unless the record's
time is given (``time_us``: the core stamps a request when it arrives), once per ``tick``, and
once per digest or retention entry written (its ``time``), as the Rust writer reads its clock.

Serialization is exact: orjson's compact output (the same escapes as serde_json: the short forms
``\\" \\\\ \\b \\f \\n \\r \\t``, other control characters as lowercase ``\\u00xx``, everything else
as UTF-8), keys in the order of FORMAT.md, times as ``%Y-%m-%dT%H:%M:%S.ffffffZ``, floats in their
shortest round-trip form (``0.35``).

Where FORMAT.md leaves a choice, this writer makes these, in this order, and the Rust writer has
to make the same ones to write the same bytes:

- Before a record is written: if a segment is open and already holds ``rotate_bytes`` or more,
  or (with ``rotate_hourly``) the record's UTC hour differs from the segment's (the hour in its
  name), the segment is closed by a ``final`` digest (even one covering nothing), and the record
  opens a new segment. So a segment ends with the record that took it to ``rotate_bytes`` or past.
- After a record is written: a digest when ``digest_every_records`` records wait for one, or when
  the record's time is ``digest_every_s`` or more after the last digest's (or the opening). ``tick``
  writes the time-based digest without a record when records wait. (The Rust writer measures
  ``digest_every_s`` on a monotonic clock and, in buffered mode, digests only what it has synced
  and after a whole batch; with one record at a time in strict mode and no ``digest_every_s``
  falling due, the two write the same bytes.)
- ``close`` closes the open segment by a ``final`` digest; a writer that never wrote a record
  writes nothing.
- Opening a chain that holds records is a restart: the next record opens a new segment. When the
  newest segment's last digest is ``final``, covers every whole line and no torn bytes follow, the
  last writer closed cleanly and nothing more is written; otherwise a recovery digest closes the
  newest segment (``final``, ``gap``: ``after_seq`` the last whole record, ``torn_bytes`` the bytes
  after it). A torn tail of ``digests.jsonl`` (no newline: an entry cut short, never valid) is cut
  off first. A segment file holding no whole record (the crash came before its first line was
  whole) is removed, because its name is the one the next segment takes (within the same hour);
  the recovery digest then closes the segment before it, with ``torn_bytes`` 0, as the Rust
  writer does. (The Rust writer keeps a segment whose first line is whole but damaged, its
  recovery digest covering nothing and ``gap`` giving its bytes.)
- A retention entry is written before its segments are deleted, so a crash in between leaves
  segments that are merely still there.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ADMIN_KEYS",
    "REQUEST_KEYS",
    "ZERO_HASH",
    "ChainWriter",
    "Clock",
    "RecoveryError",
    "SteppingClock",
    "format_time",
    "key_id",
    "public_key_pem",
    "sample_admin",
    "sample_request",
    "segment_name",
    "write_public_key",
    "write_sample_trail",
]

Clock = Callable[[], int]
"""Microseconds since the Unix epoch, UTC."""

ZERO_HASH = "0" * 64
"""The ``prev`` of a chain's first record and the ``prev_digest`` of its first digest."""

REQUEST_KEYS = (
    "request_id",
    "trace_id",
    "customer",
    "method",
    "path",
    "client",
    "user_agent",
    "tier",
    "region",
    "risk",
    "step_up",
    "cells",
    "cell",
    "encryption",
    "retries",
    "cell_status",
    "status",
    "latency_us",
    "outcome",
    "reason",
)
"""A ``request`` record's keys after ``event``, in the order they are written."""

ADMIN_KEYS = ("admin", "action", "target", "status", "outcome", "reason")
"""An ``admin`` record's keys after ``event``, in the order they are written."""

RISK_KEYS = ("score", "level", "factors")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIGNATURE_MARK = b',"signature":"'


class RecoveryError(Exception):
    """A chain on disk that this writer cannot resume: it is not what a crash leaves."""


def format_time(time_us: int) -> str:
    """``time_us`` (microseconds since the epoch) as ``2026-12-01T21:42:55.123456Z``."""
    return (_EPOCH + timedelta(microseconds=time_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def segment_name(first_seq: int, time_us: int) -> str:
    """The file name of a segment whose first record has ``first_seq`` and ``time_us``."""
    hour = (_EPOCH + timedelta(microseconds=time_us)).strftime("%Y%m%dT%H")
    return f"{first_seq:012d}-{hour}.jsonl"


def _hour(time_us: int) -> int:
    return time_us // 3_600_000_000


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _sha256_hex(raw)[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """The public key as ``audit-key.pub`` holds it: PEM, SubjectPublicKeyInfo."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_public_key(directory: Path, signing_key: Ed25519PrivateKey) -> Path:
    """Writes ``directory/audit-key.pub`` unless it already holds this key's public half;
    refuses (ValueError) when it holds another key."""
    path = Path(directory) / "audit-key.pub"
    pem = public_key_pem(signing_key.public_key())
    if path.exists():
        if path.read_bytes() != pem:
            raise ValueError(f"{path} holds another public key than the writer's signing key")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pub.tmp")
    tmp.write_bytes(pem)
    tmp.rename(path)
    return path


def _ordered(fields: Mapping[str, Any], keys: Sequence[str], event: str) -> dict[str, Any]:
    """``fields`` laid out in ``keys`` order, then any other key in the caller's order (later
    versions add keys at the end); every key of ``keys`` is required."""
    missing = [key for key in keys if key not in fields]
    if missing:
        raise ValueError(f"an {event} record needs {', '.join(missing)}")
    out = {key: fields[key] for key in keys}
    for key, value in fields.items():
        if key not in out:
            out[key] = value
    risk = out.get("risk")
    if event == "request" and isinstance(risk, Mapping):
        out["risk"] = _ordered(risk, RISK_KEYS, "risk")
    return out


@dataclass
class _Segment:
    """The open segment and what its next digest covers."""

    name: str
    path: Path
    file: Any
    hour: int
    size: int
    hasher: Any
    pending_first_seq: int | None = None
    pending_first_time: str | None = None
    pending_last_seq: int | None = None
    pending_last_time: str | None = None
    pending_last_hash: str | None = None
    pending: int = 0


class ChainWriter:
    """Writes one chain, ``directory/chain-<chain>/``, as FORMAT.md lays it out.

    Opening takes the chain's lock (an exclusive flock on ``lock``; ``BlockingIOError`` when
    another writer holds it) and resumes a chain already on disk as a restart does (see the
    module's doc). ``gap`` is what that recovery reported (``None`` after a clean shutdown or on a
    new chain)."""

    def __init__(
        self,
        directory: Path,
        chain: int,
        signing_key: Ed25519PrivateKey,
        clock: Clock,
        *,
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_hourly: bool = True,
        digest_every_records: int = 1000,
        digest_every_s: float | None = 60.0,
    ) -> None:
        if rotate_bytes < 1 or digest_every_records < 1:
            raise ValueError("rotate_bytes and digest_every_records must be at least 1")
        self.directory = Path(directory)
        self.chain = chain
        self.chain_dir = self.directory / f"chain-{chain}"
        self._key = signing_key
        self._key_id = key_id(signing_key.public_key())
        self._clock = clock
        self.rotate_bytes = rotate_bytes
        self.rotate_hourly = rotate_hourly
        self.digest_every_records = digest_every_records
        self._digest_every_us = (
            None if digest_every_s is None else round(digest_every_s * 1_000_000)
        )
        write_public_key(self.directory, signing_key)
        self.chain_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.chain_dir / "lock", "ab")  # noqa: SIM115 (held while open)
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise
        self._digests_path = self.chain_dir / "digests.jsonl"
        self._next_seq = 1
        self._prev = ZERO_HASH
        self._digest_no = 0
        self._prev_digest = ZERO_HASH
        self._lost = 0
        self._segment: _Segment | None = None
        self._closed_segments: set[str] = set()
        self.gap: dict[str, int] | None = None
        self._digests = open(self._digests_path, "ab", buffering=0)  # noqa: SIM115
        now = self._clock()
        self._last_digest_us = now
        try:
            self._recover(now)
        except BaseException:
            self.crash()
            raise

    # -- records --------------------------------------------------------------------------------

    def request(self, time_us: int | None = None, **fields: Any) -> bytes:
        """Appends a ``request`` record with FORMAT.md's keys (every one required; other keys go
        after them) at ``time_us`` (default: the clock's) and returns its line, without the
        newline."""
        return self._append("request", _ordered(fields, REQUEST_KEYS, "request"), time_us)

    def admin(self, time_us: int | None = None, **fields: Any) -> bytes:
        """Appends an ``admin`` record (``admin``, ``action``, ``target``, ``status``,
        ``outcome``, ``reason``) at ``time_us`` (default: the clock's) and returns its line,
        without the newline."""
        return self._append("admin", _ordered(fields, ADMIN_KEYS, "admin"), time_us)

    def note_lost(self, count: int) -> None:
        """Counts records the writer could not take (fail-open); the next digest reports them."""
        self._lost += count

    def _append(self, event: str, body: dict[str, Any], time_us: int | None) -> bytes:
        now = self._clock() if time_us is None else time_us
        time = format_time(now)
        record = {
            "v": 1,
            "chain": self.chain,
            "seq": self._next_seq,
            "time": time,
            "prev": self._prev,
            "event": event,
            **body,
        }
        line = orjson.dumps(record)
        segment = self._segment
        if segment is not None and (
            segment.size >= self.rotate_bytes or (self.rotate_hourly and _hour(now) != segment.hour)
        ):
            self._write_digest(self._clock(), final=True)
            segment = None
        if segment is None:
            segment = self._open_segment(self._next_seq, now)
        segment.file.write(line + b"\n")
        segment.hasher.update(line + b"\n")
        segment.size += len(line) + 1
        line_hash = _sha256_hex(line)
        if segment.pending == 0:
            segment.pending_first_seq = self._next_seq
            segment.pending_first_time = time
        segment.pending += 1
        segment.pending_last_seq = self._next_seq
        segment.pending_last_time = time
        segment.pending_last_hash = line_hash
        self._next_seq += 1
        self._prev = line_hash
        if segment.pending >= self.digest_every_records or self._digest_due(now):
            self._write_digest(self._clock(), final=False)
        return line

    def _open_segment(self, first_seq: int, now: int) -> _Segment:
        name = segment_name(first_seq, now)
        path = self.chain_dir / name
        if path.exists():
            raise RecoveryError(f"{path} already exists")
        file = open(path, "ab", buffering=0)  # noqa: SIM115 (closed at rotation)
        self._segment = _Segment(name, path, file, _hour(now), 0, hashlib.sha256())
        return self._segment

    # -- digests --------------------------------------------------------------------------------

    def _digest_due(self, now: int) -> bool:
        every = self._digest_every_us
        return every is not None and now - self._last_digest_us >= every

    def tick(self) -> bytes | None:
        """Writes the time-based digest when ``digest_every_s`` has passed and records wait for
        one; returns its line, or ``None``."""
        now = self._clock()
        segment = self._segment
        if segment is not None and segment.pending and self._digest_due(now):
            return self._write_digest(now, final=False)
        return None

    def digest(self) -> bytes | None:
        """Writes a digest of the open segment's waiting records now (none when nothing waits);
        returns its line, or ``None``."""
        if self._segment is None or not self._segment.pending:
            return None
        return self._write_digest(self._clock(), final=False)

    def _write_digest(self, now: int, *, final: bool) -> bytes:
        segment = self._segment
        assert segment is not None
        entry = self._records_entry(
            now,
            segment.name,
            segment.pending_first_seq,
            segment.pending_last_seq,
            segment.pending,
            segment.pending_first_time,
            segment.pending_last_time,
            segment.pending_last_hash,
            segment.size,
            segment.hasher.copy().hexdigest(),
            final,
            None,
        )
        line = self._write_entry(entry)
        segment.pending = 0
        segment.pending_first_seq = segment.pending_last_seq = None
        segment.pending_first_time = segment.pending_last_time = None
        segment.pending_last_hash = None
        self._last_digest_us = now
        if final:
            segment.file.close()
            self._closed_segments.add(segment.name)
            self._segment = None
        return line

    def _records_entry(
        self,
        now: int,
        name: str,
        first_seq: int | None,
        last_seq: int | None,
        count: int,
        first_time: str | None,
        last_time: str | None,
        last_hash: str | None,
        segment_bytes: int,
        segment_sha256: str,
        final: bool,
        gap: dict[str, int] | None,
    ) -> dict[str, Any]:
        lost, self._lost = self._lost, 0
        return {
            **self._entry_head("records", now),
            "segment": name,
            "first_seq": first_seq if count else None,
            "last_seq": last_seq if count else None,
            "count": count,
            "first_time": first_time if count else None,
            "last_time": last_time if count else None,
            "last_hash": last_hash if count else None,
            "segment_bytes": segment_bytes,
            "segment_sha256": segment_sha256,
            "final": final,
            "lost": lost,
            "gap": gap,
        }

    def _entry_head(self, kind: str, now: int) -> dict[str, Any]:
        return {
            "v": 1,
            "chain": self.chain,
            "digest": self._digest_no + 1,
            "kind": kind,
            "time": format_time(now),
            "prev_digest": self._prev_digest,
        }

    def _write_entry(self, entry: dict[str, Any]) -> bytes:
        """Signs ``entry`` (its line up to ``"key_id"`` and the closing brace) and appends it."""
        signed = orjson.dumps({**entry, "key_id": self._key_id})
        signature = base64.b64encode(self._key.sign(signed))
        line = signed[:-1] + _SIGNATURE_MARK + signature + b'"}'
        self._digests.write(line + b"\n")
        self._digest_no += 1
        self._prev_digest = _sha256_hex(line)
        return line

    # -- retention, shutdown, crash -------------------------------------------------------------

    def remove_segments(self, names: Iterable[str]) -> bytes:
        """Deletes closed segments by retention: writes the ``retention`` entry (oldest first),
        then the files; returns the entry's line. Refuses (ValueError) a segment that has no
        ``final`` digest."""
        removed = sorted(names)
        if not removed:
            raise ValueError("nothing to remove")
        for name in removed:
            if name not in self._closed_segments:
                raise ValueError(f"{name} is not a closed segment of chain {self.chain}")
        entry = {**self._entry_head("retention", self._clock()), "removed": removed}
        line = self._write_entry(entry)
        for name in removed:
            (self.chain_dir / name).unlink(missing_ok=True)
        self._closed_segments.difference_update(removed)
        return line

    def close(self) -> None:
        """Shuts down cleanly: the open segment's ``final`` digest, then the lock."""
        if self._segment is not None:
            self._write_digest(self._clock(), final=True)
        self.crash()

    def crash(self) -> None:
        """Stops as a killed process would: no closing digest; files and lock let go."""
        if self._segment is not None:
            self._segment.file.close()
            self._segment = None
        self._digests.close()
        self._lock.close()

    def __enter__(self) -> ChainWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recovery -------------------------------------------------------------------------------

    def _recover(self, now: int) -> None:
        """Resumes the chain on disk: next seq and prev from its last whole record, digest
        number and prev from its last entry; writes the recovery digest after a crash."""
        data = self._digests_path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) != len(data):
            os.truncate(self._digests_path, len(whole))
        last_digest: dict[str, dict[str, Any]] = {}
        removed: set[str] = set()
        for line in whole.splitlines():
            entry = orjson.loads(line)
            self._digest_no = entry["digest"]
            self._prev_digest = _sha256_hex(line)
            if entry["kind"] == "records":
                last_digest[entry["segment"]] = entry
                if entry["final"]:
                    self._closed_segments.add(entry["segment"])
            elif entry["kind"] == "retention":
                removed.update(entry["removed"])
        self._closed_segments -= removed
        names = sorted(p.name for p in self.chain_dir.glob("*.jsonl") if p.name != "digests.jsonl")
        removed_torn_only = False
        while names:
            path = self.chain_dir / names[-1]
            content = path.read_bytes()
            intact = content[: content.rfind(b"\n") + 1]
            if intact:
                break
            closing = last_digest.get(names[-1])
            if closing is not None and closing["final"] and closing["segment_bytes"] == 0:
                # Closed, with no record, by an earlier recovery that kept it (as the Rust
                # writer does): the chain goes on from the segment before it.
                names.pop()
                continue
            if closing is not None:
                raise RecoveryError(f"{path} holds no whole record but a digest covers it")
            path.unlink()
            names.pop()
            removed_torn_only = True
        if not names:
            covered = [e for e in last_digest.values() if e["last_seq"] is not None]
            if covered:
                # Resume after the newest digested record (every segment went by retention, or
                # the newest one holds no record).
                newest = max(covered, key=lambda e: e["last_seq"])
                self._next_seq = newest["last_seq"] + 1
                self._prev = newest["last_hash"]
            return
        name = names[-1]
        lines = intact.splitlines()
        last = orjson.loads(lines[-1])
        self._next_seq = last["seq"] + 1
        self._prev = _sha256_hex(lines[-1])
        torn_bytes = len(content) - len(intact)
        previous = last_digest.get(name)
        covered_bytes = previous["segment_bytes"] if previous else 0
        if covered_bytes > len(intact):
            raise RecoveryError(f"{path} is shorter than its digests say")
        clean = (
            previous is not None
            and previous["final"]
            and covered_bytes == len(intact)
            and torn_bytes == 0
            and not removed_torn_only
        )
        if clean:
            return
        waiting = intact[covered_bytes:].splitlines()
        records = [orjson.loads(line) for line in waiting]
        self.gap = {"after_seq": last["seq"], "torn_bytes": torn_bytes}
        entry = self._records_entry(
            now,
            name,
            records[0]["seq"] if records else None,
            records[-1]["seq"] if records else None,
            len(records),
            records[0]["time"] if records else None,
            records[-1]["time"] if records else None,
            _sha256_hex(waiting[-1]) if waiting else None,
            len(intact),
            _sha256_hex(intact),
            True,
            self.gap,
        )
        self._write_entry(entry)
        self._closed_segments.add(name)


class SteppingClock:
    """A clock for tests: starts at ``start_us`` and moves ``step_us`` on each reading;
    ``advance`` jumps it."""

    def __init__(self, start_us: int, step_us: int = 1_000) -> None:
        self.now_us = start_us
        self.step_us = step_us

    def __call__(self) -> int:
        now = self.now_us
        self.now_us += self.step_us
        return now

    def advance(self, us: int) -> None:
        """Moves the clock ``us`` microseconds on."""
        self.now_us += us


_CUSTOMERS = [f"c-{i:04d}" for i in range(1, 41)]
_CELLS = ["retail-us-east-1", "retail-us-east-2", "corp-us-east-1", "retail-eu-west-1"]
_PATHS = ["/api/accounts", "/api/transfers", "/api/payments/42", "/api/statements"]
_OUTCOMES = [
    ("forwarded", None, 200),
    ("forwarded", None, 201),
    ("refused", "rate_limited", 429),
    ("refused", "step_up_required", 403),
    ("failed", "cell_timeout", 504),
    ("cancelled", "client_gone", 499),
]


def sample_request(rng: random.Random, index: int) -> dict[str, Any]:
    """A plausible ``request`` record's fields, drawn from ``rng`` (for fixtures and benches)."""
    outcome, reason, status = rng.choice(_OUTCOMES)
    cell = rng.choice(_CELLS) if outcome != "refused" else None
    score = round(rng.random(), 2)
    return {
        "request_id": f"r-{index:016x}",
        "trace_id": f"{rng.getrandbits(128):032x}" if rng.random() < 0.8 else None,
        "customer": rng.choice(_CUSTOMERS) if rng.random() < 0.95 else None,
        "method": rng.choice(["GET", "GET", "POST", "PUT"]),
        "path": rng.choice(_PATHS),
        "client": f"hmac-sha256:{rng.getrandbits(256):064x}",
        "user_agent": rng.choice([None, "curl/8.5.0", "bank-app/7.1 (iOS)"]),
        "tier": "standard",
        "region": "us-east",
        "risk": {"score": score, "level": "HIGH" if score > 0.8 else "LOW", "factors": []},
        "step_up": None,
        "cells": [[_CELLS[0], None], [_CELLS[1], rng.choice([None, "breaker_open", "unhealthy"])]],
        "cell": cell,
        "encryption": "standard" if cell else None,
        "retries": 0,
        "cell_status": status if outcome == "forwarded" else None,
        "status": status,
        "latency_us": rng.randrange(200, 90_000),
        "outcome": outcome,
        "reason": reason,
    }


def sample_admin(rng: random.Random) -> dict[str, Any]:
    """A plausible ``admin`` record's fields: a customer revoked or reinstated."""
    customer = rng.choice(_CUSTOMERS)
    action = rng.choice(["revoke_customer", "lift_customer_revocation"])
    return {
        "admin": "ops-1",
        "action": action,
        "target": {"customer": customer},
        "status": 200,
        "outcome": "applied",
        "reason": None,
    }


def write_sample_trail(
    directory: Path,
    signing_key: Ed25519PrivateKey,
    *,
    chains: int = 3,
    records_per_chain: int = 100,
    clock: Clock | None = None,
    rotate_bytes: int = 16 * 1024,
    digest_every_records: int = 10,
    digest_every_s: float | None = None,
    admin_every: int = 25,
    left_open: Iterable[int] = (),
    seed: int = 0,
) -> dict[int, list[bytes]]:
    """Writes a trail of sample records (every ``admin_every``-th an ``admin`` one), the chains'
    writes taking turns on one clock; returns each chain's lines in chain order. The writers of
    ``left_open`` stop as if killed (their last records stay uncovered); the others close."""
    rng = random.Random(seed)
    clock = clock or SteppingClock(1_796_160_000_000_000, 250_000)
    writers = [
        ChainWriter(
            directory,
            chain,
            signing_key,
            clock,
            rotate_bytes=rotate_bytes,
            digest_every_records=digest_every_records,
            digest_every_s=digest_every_s,
        )
        for chain in range(chains)
    ]
    lines: dict[int, list[bytes]] = {chain: [] for chain in range(chains)}
    for index in range(records_per_chain * chains):
        chain = index % chains
        writer = writers[chain]
        if admin_every and index % admin_every == admin_every - 1:
            lines[chain].append(writer.admin(**sample_admin(rng)))
        else:
            lines[chain].append(writer.request(**sample_request(rng, index)))
    stopped = set(left_open)
    for chain, writer in enumerate(writers):
        if chain in stopped:
            writer.crash()
        else:
            writer.close()
    return lines
