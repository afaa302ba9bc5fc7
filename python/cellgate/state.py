"""State that lasts and state the node shares: the revocation log and the shared-memory zone.

Every revocation and lift is appended to ``<[state] directory>/revocations.jsonl`` (one JSON
object a line, fsynced) before it takes effect, so a restart forgets none. ``cellgate serve``
compacts the log (dropping what can refuse nothing any more) and, when the zone is on, creates
the zone file before granian starts the workers and loads the log into it; each worker maps the
zone (named by ``CELLGATE_ZONE``), which also holds each cell's in-flight count and health.
Without a zone each worker loads the log into its own state.
"""

from __future__ import annotations

import fcntl
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from cellgate import _core
from cellgate.config import Config

__all__ = ["ZONE_ENV", "RevocationLog", "node_state", "revocation_log", "zone_wanted"]

#: The environment variable naming the zone file each worker maps.
ZONE_ENV = "CELLGATE_ZONE"
LOG_NAME = "revocations.jsonl"


def zone_wanted(config: Config, workers: int) -> bool:
    """Whether the node runs a zone: ``[state] zone`` on, or auto with more than one worker."""
    mode = config.state.zone
    return mode == "on" or (mode == "auto" and workers > 1)


def revocation_log(config: Config) -> RevocationLog:
    """The configuration's revocation log."""
    return RevocationLog(Path(config.base_dir, config.state.directory, LOG_NAME))


class RevocationLog:
    """An append-only JSON Lines file of revocations and lifts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: dict[str, Any]) -> bool:
        """Appends ``entry`` and syncs it to disk; False when it could not be written."""
        return self.extend([entry])

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds the log's lock file: appends and compactions of every process on this state
        directory take turns, so no append goes to a file a compaction is replacing."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def extend(self, entries: list[dict[str, Any]]) -> bool:
        """Appends ``entries`` with one write and one sync; False when they could not be
        written."""
        try:
            with self._locked():
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, b"".join(orjson.dumps(entry) + b"\n" for entry in entries))
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError:
            return False
        return True

    def entries(self, now_s: float, max_token_lifetime_s: int | None) -> list[dict[str, Any]]:
        """What the log still revokes at ``now_s``, folded: one entry per token and customer,
        without lifted cut-offs, expired tokens, or cut-offs older than the token lifetime. A
        line cut short by a crash is skipped."""
        tokens: dict[str, int] = {}
        customers: dict[str, float] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            try:
                entry = orjson.loads(line)
                op = entry["op"]
                if op == "revoke_token":
                    jti, forget = str(entry["jti"]), int(entry["forget_after_s"])
                    tokens[jti] = max(forget, tokens.get(jti, 0))
                elif op == "revoke_customer":
                    # The later cut-off stands, as the core keeps it (a lift clears it first).
                    customer, before = str(entry["customer_id"]), float(entry["issued_before_s"])
                    customers[customer] = max(before, customers.get(customer, before))
                elif op == "lift_customer":
                    customers.pop(str(entry["customer_id"]), None)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        kept: list[dict[str, Any]] = [
            {"op": "revoke_token", "jti": jti, "forget_after_s": forget}
            for jti, forget in tokens.items()
            if forget > now_s
        ]
        lifetime_s = max_token_lifetime_s
        for customer, before in customers.items():
            if lifetime_s is not None and math.ceil(before) + lifetime_s <= now_s:
                continue
            entry = {"op": "revoke_customer", "customer_id": customer, "issued_before_s": before}
            kept.append(entry)
        return kept

    def compact(self, now_s: float, max_token_lifetime_s: int | None) -> list[dict[str, Any]]:
        """Rewrites the log as what it still revokes (atomically, holding the lock against
        appends) and returns that."""
        if not self.path.exists():
            return []
        try:
            with self._locked():
                kept = self.entries(now_s, max_token_lifetime_s)
                temporary = self.path.with_suffix(".jsonl.tmp")
                with open(temporary, "wb") as out:
                    out.writelines(orjson.dumps(entry) + b"\n" for entry in kept)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, self.path)
                return kept
        except OSError:
            # Left as it is: still whole, only longer.
            return self.entries(now_s, max_token_lifetime_s)


def apply(entries: list[dict[str, Any]], target: _core.Zone) -> None:
    """Applies revocation log entries to the zone."""
    for entry in entries:
        if entry["op"] == "revoke_token":
            target.revoke_token(entry["jti"], entry["forget_after_s"])
        elif entry["op"] == "revoke_customer":
            target.revoke_customer(entry["customer_id"], entry["issued_before_s"])


def worker_slots(workers: int) -> int:
    """Worker records in the zone for ``workers`` workers: room for each, and as many again for
    workers respawned before their dead predecessors' records are swept."""
    return 2 * max(workers, 1) + 2


@contextmanager
def node_state(config: Config, workers: int) -> Iterator[str | None]:
    """Prepares the node's state for ``cellgate serve``: compacts the revocation log and, when
    the zone is on, creates it, loads the log into it and names it in ``CELLGATE_ZONE``;
    yields the zone's path (or None) and removes the zone file on exit."""
    state = config.state
    kept = revocation_log(config).compact(time.time(), state.max_token_lifetime_s)
    if not zone_wanted(config, workers):
        os.environ.pop(ZONE_ENV, None)
        yield None
        return
    path = Path(state.zone_directory, f"cellgate-{os.getpid()}.zone")
    zone = _core.Zone.create(
        str(path),
        state.revocation_slots,
        state.quota_slots,
        state.max_token_lifetime_s,
        cell_slots=len(config.cells),
        worker_slots=worker_slots(workers),
    )
    apply(kept, zone)
    os.environ[ZONE_ENV] = str(path)
    try:
        yield str(path)
    finally:
        os.environ.pop(ZONE_ENV, None)
        path.unlink(missing_ok=True)
