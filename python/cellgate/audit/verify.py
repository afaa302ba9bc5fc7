"""``cellgate audit verify``: checks every chain and signed digest of a trail (FORMAT.md).

Per chain, the digests first (each entry's key, signature and link to the entry before it), then
the records in chain order, segment after segment: each ``seq`` one more than the last, each
``prev`` the SHA-256 of the line before, and at each digest's ``last_seq`` the line's hash, the
segment's length and the SHA-256 of its bytes so far as the digest signed them. The first thing
that does not hold is the break reported, with its file, its line and one of ``KINDS``.

The records are read as bytes in chunks; a line is matched against its fixed prefix (the keys come
in a fixed order, so ``seq`` and ``prev`` sit at known places) and hashed, and only a line that
does not fit is looked at closely, when the break is being explained.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cellgate.audit.layout import (
    DIGESTS_FILE,
    READ_CHUNK_BYTES,
    SEGMENT_NAME,
    Chain,
    chains,
    segment_names,
)

__all__ = [
    "KINDS",
    "Break",
    "ChainReport",
    "Gap",
    "TrailReport",
    "key_id",
    "load_public_key",
    "verify_trail",
]

KINDS = (
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "segment_missing",
    "digest_forged",
    "wrong_key",
)
"""The kinds of break verify names (FORMAT.md)."""

ZERO_HASH = b"0" * 64
_SIGNATURE_MARK = b',"signature":"'
_HEX64 = re.compile(r"[0-9a-f]{64}")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The ``key_id`` digests signed by ``public_key`` carry."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo); ValueError otherwise."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("not a PEM public key (SubjectPublicKeyInfo)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 key (a {type(key).__name__})")
    return key


@dataclass(frozen=True)
class Break:
    """The first thing in a trail that does not hold: which ``kind``, in which file, at which
    line (1-based; ``None`` where it is a whole file), and what a human should look at."""

    kind: str
    path: Path
    line: int | None
    detail: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Gap:
    """A restart after a crash, as its recovery digest reports it."""

    chain: int
    segment: str
    after_seq: int
    torn_bytes: int


@dataclass
class ChainReport:
    """What verify found in one chain."""

    chain: int
    segments: int = 0
    removed_segments: int = 0
    records: int = 0
    digests: int = 0
    retention_entries: int = 0
    lost: int = 0
    uncovered: int = 0
    uncovered_from_seq: int | None = None
    gaps: list[Gap] = field(default_factory=list)
    incomplete_tail: tuple[Path, int] | None = None
    incomplete_digest: tuple[Path, int] | None = None
    last_digest_time: str | None = None

    @property
    def records_end(self) -> int:
        """The chain's last seq walked (0 when it holds no record)."""
        return (self.uncovered_from_seq or 1) + self.uncovered - 1 if self.uncovered else 0


@dataclass
class TrailReport:
    """The whole verification: every chain's report and the first break, if any."""

    directory: Path
    chains: list[ChainReport] = field(default_factory=list)
    broken: Break | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every chain and digest is intact."""
        return self.broken is None

    def total(self, name: str) -> int:
        """The sum of one of ``ChainReport``'s counts over the chains."""
        return sum(getattr(chain, name) for chain in self.chains)


class _Found(Exception):
    """Raised inside a chain's check to stop at its first break."""

    def __init__(self, found: Break) -> None:
        super().__init__(str(found))
        self.found = found


@dataclass
class _Link:
    """One line as the explanation of a break sees it."""

    path: Path
    line: int
    seq: int | None
    prev: bytes | None
    hash: bytes
    raw: bytes


@dataclass
class _Checkpoint:
    """A ``records`` digest, as a point in its segment to check."""

    line: int
    last_seq: int | None
    last_hash: bytes | None
    segment_bytes: int
    segment_sha256: str
    final: bool
    gap: dict[str, Any] | None


def _int(value: Any) -> int:
    """A signed entry's count, or 0 where it holds none (a writer's mistake, not a forgery)."""
    return value if type(value) is int else 0


def _hash(line: bytes) -> bytes:
    return binascii.hexlify(hashlib.sha256(line).digest())


def _record_pattern(chain: int) -> re.Pattern[bytes]:
    return re.compile(
        rb'\{"v":1,"chain":%d,"seq":([0-9]+),"time":"[^"]{27}","prev":"([0-9a-f]{64})","event":'
        % chain
    )


def _parse_record(
    raw: bytes, chain: int, pattern: re.Pattern[bytes]
) -> tuple[int | None, bytes | None]:
    """``(seq, prev)`` of a line, or ``(None, None)`` when it is not a record of ``chain``."""
    match = pattern.match(raw)
    if match:
        return int(match[1]), match[2]
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(record, dict) or record.get("chain") != chain:
        return None, None
    seq, prev = record.get("seq"), record.get("prev")
    if type(seq) is not int or not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        return None, None
    return seq, prev.encode()


def _span(first: int, last: int, noun: str) -> str:
    if first == last:
        return f"{noun} {first}"
    return f"{noun}s {first}-{last}"


def _explain(
    links: list[_Link],
    i: int,
    seq: int,
    prev: bytes,
    before: _Link | None,
    known: dict[int, tuple[bytes, int]],
    noun: str = "record",
) -> Break:
    """Names the break at ``links[i]``, which does not continue the chain as expected (``seq``
    after ``before``, whose hash is ``prev``) or does not hash as its digest says (``known``:
    seq to the digest's ``last_hash`` and its line in ``digests.jsonl``).
    ``noun`` is what the chain links: a ``record`` (numbered by seq) or a ``digest``."""
    here = links[i]
    after = links[i + 1] if i + 1 < len(links) else None
    label = "seq" if noun == "record" else noun

    def fits(link: _Link | None, want_seq: int, want_prev: bytes) -> bool:
        return link is not None and link.seq == want_seq and link.prev == want_prev

    def at(kind: str, link: _Link, detail: str) -> Break:
        return Break(kind, link.path, link.line, detail)

    if here.seq is None:
        if fits(after, seq, prev):
            return at("inserted", here, f"not a {noun} of this chain; {label} {seq} follows it")
        return at("modified", here, f"not a well-formed {noun} ({label} {seq} was expected here)")
    if here.seq == seq:
        if fits(after, seq, prev):
            return at(
                "inserted", here, f"a second {label} {seq}; the chain goes on from the next line"
            )
        if here.prev == prev:
            digest_line = known[seq][1] if seq in known else "?"
            return at(
                "modified",
                here,
                f"{label} {seq} does not hash to the last_hash of {DIGESTS_FILE} line "
                f"{digest_line}",
            )
        successor_agrees = fits(after, seq + 1, here.hash) or (
            after is None and known.get(seq, (here.hash, 0))[0] == here.hash
        )
        if before is not None and before.line > 0 and successor_agrees:
            where = "" if here.path == before.path else f" of {here.path.name}"
            return at(
                "modified",
                before,
                f"{label} {before.seq} was changed: its hash is not the prev of {label} {seq} "
                f"(line {here.line}{where})",
            )
        return at("modified", here, f"{label} {seq}'s prev is not the hash of the line before")
    if here.seq > seq:
        if here.prev == prev:
            return at("modified", here, f"{label} says {here.seq} where the chain has {seq}")
        for later in links[i + 1 :]:
            if later.seq == seq:
                return at(
                    "reordered",
                    here,
                    f"{label} {here.seq} comes before {label} {seq} (line {later.line})",
                )
        missing = _span(seq, here.seq - 1, noun)
        return at("deleted", here, f"{missing} missing: this line is {label} {here.seq}")
    if before is not None and here.seq == seq - 1 and here.prev == before.prev:
        if here.raw == before.raw:
            return at("inserted", here, f"a copy of line {before.line} ({label} {here.seq})")
        if fits(after, seq, here.hash) or known.get(here.seq, (b"", 0))[0] == here.hash:
            return at(
                "inserted",
                before,
                f"a second {label} {here.seq}; the chain goes on from line {here.line}",
            )
        return at("inserted", here, f"a second {label} {here.seq}")
    if fits(after, seq, prev):
        return at(
            "inserted", here, f"{label} {here.seq} does not belong here ({label} {seq} expected)"
        )
    return at("inserted", here, f"{label} {here.seq} where {label} {seq} was expected")


class _ChainCheck:
    """Verifies one chain; ``run`` raises ``_Found`` at its first break."""

    def __init__(
        self,
        chain: Chain,
        public_key: Ed25519PublicKey,
        report: ChainReport,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.chain = chain
        self.public_key = public_key
        self.key_id = key_id(public_key)
        self.report = report
        self.progress = progress
        self.pattern = _record_pattern(chain.number)
        self.digests_path = chain.path / DIGESTS_FILE
        self.checkpoints: dict[str, list[_Checkpoint]] = {}
        self.named_at: dict[str, int] = {}
        self.removed: dict[str, int] = {}
        self.known: dict[int, tuple[bytes, int]] = {}
        # Listed before the digests are read: on a live trail, a segment listed here was closed
        # by a final digest (written before the next segment is made) that the read will find.
        self.listed = segment_names(chain.path)

    # -- digests.jsonl --------------------------------------------------------------------------

    def check_digests(self) -> None:
        """Each entry's key and signature, then its number and ``prev_digest``."""
        path = self.digests_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        torn = lines.pop()
        links: list[_Link] = []
        entries: list[dict[str, Any]] = []
        for number, raw in enumerate(lines, 1):
            entry = self._signed_entry(raw, number)
            seq = entry.get("digest")
            prev = entry.get("prev_digest")
            links.append(
                _Link(
                    path,
                    number,
                    seq if type(seq) is int else None,
                    prev.encode() if isinstance(prev, str) else None,
                    _hash(raw),
                    raw,
                )
            )
            entries.append(entry)
        want_seq, want_prev = 1, ZERO_HASH
        for i, link in enumerate(links):
            if link.seq != want_seq or link.prev != want_prev:
                before = links[i - 1] if i else None
                raise _Found(_explain(links, i, want_seq, want_prev, before, {}, "digest"))
            want_seq, want_prev = want_seq + 1, link.hash
        if torn:
            # Being written, or torn by a crash the writer has not recovered from yet. Cutting
            # entries off the end proves no more than this (the newest digests can always be
            # removed whole); a segment it leaves without its final digest is a break below.
            self.report.incomplete_digest = (path, len(torn))
        for number, entry in enumerate(entries, 1):
            self._take_entry(entry, number)
        self.report.digests = sum(len(points) for points in self.checkpoints.values())

    def _signed_entry(self, raw: bytes, number: int) -> dict[str, Any]:
        """The entry on line ``number``, once its key and signature check."""
        path = self.digests_path
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError:
            entry = None
        cut = raw.rfind(_SIGNATURE_MARK)
        if not isinstance(entry, dict) or cut < 0 or not raw.endswith(b'"}'):
            raise _Found(Break("digest_forged", path, number, "not a signed digest entry"))
        signature = entry.get("signature")
        if (
            not isinstance(signature, str)
            or raw[cut + len(_SIGNATURE_MARK) : -2] != signature.encode()
            or list(entry)[-2:] != ["key_id", "signature"]
        ):
            raise _Found(Break("digest_forged", path, number, "not a signed digest entry"))
        if entry["key_id"] != self.key_id:
            raise _Found(
                Break(
                    "wrong_key",
                    path,
                    number,
                    f"signed by key {entry['key_id']}, not by the given key {self.key_id}",
                )
            )
        try:
            self.public_key.verify(base64.b64decode(signature, validate=True), raw[:cut] + b"}")
        except (InvalidSignature, binascii.Error, ValueError):
            raise _Found(
                Break(
                    "digest_forged",
                    path,
                    number,
                    f"the signature does not verify under key {self.key_id}",
                )
            ) from None
        if entry.get("chain") != self.chain.number:
            raise _Found(
                Break(
                    "inserted",
                    path,
                    number,
                    f"an entry of chain {entry.get('chain')} in chain {self.chain.number}",
                )
            )
        return entry

    def _take_entry(self, entry: dict[str, Any], number: int) -> None:
        kind = entry.get("kind")
        if kind == "retention":
            removed = entry.get("removed") or []
            self.report.retention_entries += 1
            for name in removed:
                if isinstance(name, str):
                    self.removed.setdefault(name, number)
            return
        if kind != "records":
            return
        name = entry.get("segment")
        if not isinstance(name, str):
            return
        last_hash = entry.get("last_hash")
        gap = entry.get("gap")
        last_seq = entry.get("last_seq")
        point = _Checkpoint(
            number,
            last_seq if entry.get("count") and type(last_seq) is int else None,
            last_hash.encode() if isinstance(last_hash, str) else None,
            _int(entry.get("segment_bytes")),
            str(entry.get("segment_sha256")),
            entry.get("final") is True,
            gap if isinstance(gap, dict) else None,
        )
        if isinstance(entry.get("time"), str):
            self.report.last_digest_time = entry["time"]
        self.checkpoints.setdefault(name, []).append(point)
        self.named_at.setdefault(name, number)
        if point.last_seq is not None and point.last_hash is not None:
            self.known[point.last_seq] = (point.last_hash, number)
        lost = entry.get("lost")
        if type(lost) is int:
            self.report.lost += lost
        if point.gap is not None:
            self.report.gaps.append(
                Gap(
                    self.chain.number,
                    name,
                    _int(point.gap.get("after_seq")),
                    _int(point.gap.get("torn_bytes")),
                )
            )

    # -- the records ----------------------------------------------------------------------------

    def check_records(self) -> None:
        """Walks the segments in chain order, from seq 1 (or from the digest of a segment
        removed by retention)."""
        chain_dir = self.chain.path
        on_disk = set(self.listed)
        names = sorted(on_disk | set(self.checkpoints))
        seq, prev = 1, ZERO_HASH
        before: _Link | None = None
        for index, name in enumerate(names):
            points = self.checkpoints.get(name, [])
            if name not in on_disk and name not in self.removed and (chain_dir / name).exists():
                break  # made after the listing (a live trail): beyond what is checked
            if name in on_disk and name in self.removed and not (chain_dir / name).exists():
                on_disk.discard(name)  # removed by retention since the listing
            if name not in on_disk:
                covered = [p for p in points if p.last_seq is not None]
                if name in self.removed:
                    # Its last digest anchors the chain where the next segment takes it up.
                    self.report.removed_segments += 1
                    if covered:
                        seq, prev = covered[-1].last_seq + 1, covered[-1].last_hash
                        before = _Link(chain_dir / name, 0, seq - 1, None, prev, b"")
                    continue
                held = f"; it held {_span(seq, covered[-1].last_seq, 'record')}" if covered else ""
                raise _Found(
                    Break(
                        "segment_missing",
                        chain_dir / name,
                        None,
                        f"named by {DIGESTS_FILE} line {self.named_at[name]} and removed by no "
                        f"retention entry{held}",
                    )
                )
            match = SEGMENT_NAME.fullmatch(name)
            first_seq = int(match[1]) if match else seq
            if first_seq > seq:
                raise _Found(
                    Break(
                        "segment_missing",
                        chain_dir / f"{seq:012d}-*.jsonl",
                        None,
                        f"no segment holds {_span(seq, first_seq - 1, 'record')} (the chain "
                        f"goes on at {name})",
                    )
                )
            newest = index == len(names) - 1
            try:
                seq, prev, before = self._walk(chain_dir / name, points, seq, prev, before, newest)
            except FileNotFoundError:
                raise _Found(
                    Break("segment_missing", chain_dir / name, None, "deleted while being read")
                ) from None
            self.report.segments += 1
            if not newest and not any(p.final for p in points):
                raise _Found(
                    Break(
                        "truncated",
                        self.digests_path,
                        None,
                        f"{name} is followed by {names[index + 1]} but has no final digest: "
                        "the digests that closed it are gone",
                    )
                )
        last_covered = max(
            (p.last_seq for points in self.checkpoints.values() for p in points if p.last_seq),
            default=0,
        )
        if seq - 1 > last_covered:
            self.report.uncovered = seq - 1 - last_covered
            self.report.uncovered_from_seq = last_covered + 1

    def _walk(
        self,
        path: Path,
        points: list[_Checkpoint],
        seq: int,
        prev: bytes,
        before: _Link | None,
        newest: bool,
    ) -> tuple[int, bytes, _Link | None]:
        """Checks one segment from ``seq`` (chaining to ``prev``); returns where the chain
        stands after it. The hot loop: a regular expression and a SHA-256 per line; the running
        SHA-256 of the segment is brought up to date only at a digest's ``last_seq``."""
        final = next((p for p in points if p.final), None)
        size = path.stat().st_size
        match = self.pattern.match
        sha256 = hashlib.sha256
        hexlify = binascii.hexlify
        segment_hash = sha256()
        point_i = self._pass_empty(path, points, 0, 0, segment_hash)
        next_seq = points[point_i].last_seq if point_i < len(points) else None
        hashed_to = base = offset = line_no = records = 0
        last_raw = carry = b""
        # Once the final digest is met, what follows is checked as bytes, not as records.
        closed = final is not None and point_i == len(points)
        with open(path, "rb") as file:
            remaining = size
            while remaining > 0 and not closed:
                chunk = file.read(min(READ_CHUNK_BYTES, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                buf = carry + chunk if carry else chunk
                lines = buf.split(b"\n")
                carry = lines.pop()
                for raw in lines:
                    line_no += 1
                    found = match(raw)
                    if found is None or int(found[1]) != seq or found[2] != prev:
                        self._explain_at(path, line_no, seq, prev, before)
                    prev = hexlify(sha256(raw).digest())
                    offset += len(raw) + 1
                    if seq == next_seq:
                        point = points[point_i]
                        segment_hash.update(buf[hashed_to - base : offset - base])
                        hashed_to = offset
                        if prev != point.last_hash:
                            self._explain_at(path, line_no, seq, prev, before, at_checkpoint=True)
                        self._check_point(path, point, offset, segment_hash, line_no)
                        point_i = self._pass_empty(path, points, point_i + 1, offset, segment_hash)
                        next_seq = points[point_i].last_seq if point_i < len(points) else None
                        closed = final is not None and point_i == len(points)
                    seq += 1
                    records += 1
                    last_raw = raw
                    if closed:
                        break
                whole_end = base + len(buf) - len(carry)
                segment_hash.update(buf[hashed_to - base : whole_end - base])
                hashed_to = base = whole_end
                if self.progress is not None:
                    self.progress(len(chunk), len(lines))
        self.report.records += records
        if records:
            before = _Link(path, line_no, seq - 1, None, prev, last_raw)
        unmet = points[point_i] if point_i < len(points) else None
        self._after_walk(path, unmet, final, size, offset, carry, line_no, seq, newest)
        return seq, prev, before

    def _pass_empty(
        self, path: Path, points: list[_Checkpoint], point_i: int, offset: int, segment_hash: Any
    ) -> int:
        """Checks the digests covering no record that close the segment at ``offset`` (a final
        digest after the last periodic one, a recovery digest); returns the next one to meet."""
        while (
            point_i < len(points)
            and points[point_i].last_seq is None
            and points[point_i].segment_bytes == offset
        ):
            self._check_point(path, points[point_i], offset, segment_hash, None)
            point_i += 1
        return point_i

    def _check_point(
        self, path: Path, point: _Checkpoint, offset: int, segment_hash: Any, line_no: int | None
    ) -> None:
        if point.segment_bytes != offset or segment_hash.copy().hexdigest() != point.segment_sha256:
            raise _Found(
                Break(
                    "modified",
                    path,
                    line_no,
                    f"the segment's first {point.segment_bytes} bytes are not those "
                    f"{DIGESTS_FILE} line {point.line} signed",
                )
            )

    def _after_walk(
        self,
        path: Path,
        point: _Checkpoint | None,
        final: _Checkpoint | None,
        size: int,
        offset: int,
        carry: bytes,
        line_no: int,
        seq: int,
        newest: bool,
    ) -> None:
        """What the segment's end must be: every digest met (``point`` is the first that was
        not), nothing after a final one but the torn bytes its gap declares."""
        if point is not None:
            if carry:
                raise _Found(
                    Break(
                        "truncated",
                        path,
                        line_no + 1,
                        f"the segment ends inside this line ({len(carry)} bytes, no newline); "
                        f"{DIGESTS_FILE} line {point.line} covers it to byte "
                        f"{point.segment_bytes}",
                    )
                )
            upto = f"seq {point.last_seq}, " if point.last_seq is not None else ""
            raise _Found(
                Break(
                    "truncated",
                    path,
                    line_no + 1,
                    f"the segment ends after line {line_no} (byte {offset}); {DIGESTS_FILE} "
                    f"line {point.line} covers it to {upto}byte {point.segment_bytes}",
                )
            )
        if final is None:
            if carry:
                if newest:
                    self.report.incomplete_tail = (path, len(carry))
                    return
                raise _Found(
                    Break(
                        "truncated",
                        path,
                        line_no + 1,
                        f"the segment ends inside this line ({len(carry)} bytes, no newline)",
                    )
                )
            return
        torn = _int(final.gap.get("torn_bytes")) if final.gap else 0
        extra = size - final.segment_bytes
        if extra == torn:
            return
        if extra > torn:
            declared = f", and the {torn} torn bytes it declares" if torn else ""
            raise _Found(
                Break(
                    "inserted",
                    path,
                    line_no + 1,
                    f"{extra - torn} bytes after the segment's final digest ({DIGESTS_FILE} "
                    f"line {final.line}, which closed it at byte {final.segment_bytes}{declared})",
                )
            )
        raise _Found(
            Break(
                "truncated",
                path,
                line_no + 1,
                f"the torn line after seq {seq - 1} that {DIGESTS_FILE} line {final.line} "
                f"declares ({torn} bytes) is {extra} bytes",
            )
        )

    def _explain_at(
        self,
        path: Path,
        line_no: int,
        seq: int,
        prev: bytes,
        before: _Link | None,
        *,
        at_checkpoint: bool = False,
    ) -> None:
        """The slow path: reads the segment again, line by line, and names the break at
        ``line_no`` (a line that does not continue the chain, or does not hash as its digest
        says)."""
        links = []
        for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
            parsed_seq, parsed_prev = _parse_record(raw, self.chain.number, self.pattern)
            links.append(_Link(path, number, parsed_seq, parsed_prev, _hash(raw), raw))
        i = line_no - 1
        if i > 0:
            before = links[i - 1]
        if at_checkpoint:
            # The line continued the chain; its hash is not the digest's.
            raise _Found(_explain(links, i, seq, links[i].prev or b"", before, self.known))
        raise _Found(_explain(links, i, seq, prev, before, self.known))


def verify_trail(
    directory: Path,
    public_key: Ed25519PublicKey,
    progress: Callable[[int, int], None] | None = None,
) -> TrailReport:
    """Verifies every chain under ``directory`` against ``public_key``; the report holds each
    chain's counts and the first break. ``progress(bytes, records)`` is called as segments are
    read."""
    directory = Path(directory)
    report = TrailReport(directory)
    for chain in chains(directory):
        chain_report = ChainReport(chain.number)
        report.chains.append(chain_report)
        check = _ChainCheck(chain, public_key, chain_report, progress)
        try:
            check.check_digests()
            check.check_records()
        except _Found as found:
            report.broken = found.found
            return report
        for entry in sorted(_strays(chain.path)):
            report.warnings.append(f"{chain.path / entry}: not part of the trail, not checked")
    return report


def _strays(chain_dir: Path) -> Iterable[str]:
    for entry in chain_dir.iterdir():
        name = entry.name
        if name not in (DIGESTS_FILE, "lock") and not SEGMENT_NAME.fullmatch(name):
            yield name


def segment_bytes_total(directory: Path) -> int:
    """The bytes of every segment under ``directory``: what a progress bar counts to."""
    total = 0
    for chain in chains(Path(directory)):
        for name in segment_names(chain.path):
            total += (chain.path / name).stat().st_size
    return total
