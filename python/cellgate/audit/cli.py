"""``cellgate audit verify | query | tail``: the audit trail's commands.

Exit codes: 0 done (verify: every chain and digest intact), 1 verify found a break, 2 a usage
error (no such directory, not a trail, an unreadable key, a bad time), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cellgate.audit.layout import KEY_FILE, OUTCOMES, chains, parse_time
from cellgate.audit.render import FORMATS, TABLE_HEADER, table_row

if TYPE_CHECKING:
    from cellgate.audit.query import Match
    from cellgate.audit.verify import TrailReport

__all__ = ["add_audit_commands"]


class UsageError(Exception):
    """A bad argument: printed on stderr, exit 2."""


def _trail_dir(text: str) -> Path:
    directory = Path(text)
    if not directory.exists():
        raise UsageError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    if not (directory / KEY_FILE).exists() and not chains(directory):
        raise UsageError(f"{directory}: not an audit trail (no {KEY_FILE}, no chain-N/)")
    return directory


def _time(text: str) -> str:
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total_bytes: int, stream: IO[str]) -> None:
        self.total = max(total_bytes, 1)
        self.stream = stream
        self.done = 0
        self.records = 0
        self.started = time.monotonic()
        self.drawn = 0.0

    def __call__(self, nbytes: int, records: int) -> None:
        self.done += nbytes
        self.records += records
        now = time.monotonic()
        if now - self.drawn >= 0.1:
            self.drawn = now
            percent = min(100, self.done * 100 // self.total)
            self.stream.write(
                f"\rverifying: {percent:3d}%  {self.records:,} records  {now - self.started:.1f} s"
            )
            self.stream.flush()

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 60 + "\r")
            self.stream.flush()


def _summary(report: TrailReport) -> list[str]:
    chains_n = len(report.chains)
    removed = report.total("removed_segments")
    retention = report.total("retention_entries")
    head = (
        f"{report.directory}: intact: {chains_n} chain{'s' * (chains_n != 1)}, "
        f"{report.total('segments'):,} segments, {report.total('records'):,} records, "
        f"{report.total('digests'):,} digests"
    )
    if retention:
        head += f", {retention:,} retention entries ({removed:,} segments removed)"
    lines = [head]
    uncovered = [c for c in report.chains if c.uncovered]
    if uncovered:
        spans = "; ".join(
            f"chain-{c.chain}: seq {c.uncovered_from_seq:,}-{c.records_end:,}" for c in uncovered
        )
        lines.append(
            f"not yet covered by a digest: {report.total('uncovered'):,} records ({spans})"
        )
    else:
        lines.append("not yet covered by a digest: 0 records")
    for chain in report.chains:
        for gap in chain.gaps:
            lines.append(
                f"crash recovered: chain-{gap.chain} resumed after seq {gap.after_seq:,} "
                f"({gap.torn_bytes} torn bytes at the end of {gap.segment})"
            )
    digested = [c for c in report.chains if c.last_digest_time]
    if digested:
        # A trail cut short at its end (newest digests and segments gone) still chains: the
        # newest digest's time is what to hold against when the gateway last wrote.
        newest = ", ".join(f"chain-{c.chain} {c.last_digest_time}" for c in digested[:8])
        more = f" and {len(digested) - 8} more" if len(digested) > 8 else ""
        lines.append(f"newest digest: {newest}{more}")
    lost = report.total("lost")
    if lost:
        lines.append(f"lost (fail-open, counted by the writer): {lost:,} records")
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    """Verifies every chain and signed digest of the trail in DIR. Exit 0 and a summary when
    all is intact (records after the last digest are listed as not yet covered, which is not a
    break); exit 1 and one line naming the file, line and kind of the first break (modified,
    deleted, inserted, reordered, truncated, segment_missing, digest_forged, wrong_key); exit 2
    for a usage error."""
    from cellgate.audit.verify import load_public_key, segment_bytes_total, verify_trail

    directory = _trail_dir(args.dir)
    if args.public_key:
        key_path = Path(args.public_key)
    else:
        key_path = directory / KEY_FILE
        print(
            f"warning: checking the digests against {key_path}, which the trail itself holds "
            "(self-attested: whoever can rewrite the trail can replace it); pass the key you "
            "were given with --public-key",
            file=sys.stderr,
        )
    try:
        public_key = load_public_key(key_path.read_bytes())
    except OSError as err:
        raise UsageError(f"{key_path}: cannot read the public key ({err.strerror})") from None
    except ValueError as err:
        raise UsageError(f"{key_path}: {err}") from None
    progress = None
    if args.progress or sys.stderr.isatty():
        progress = _Progress(segment_bytes_total(directory), sys.stderr)
    try:
        report = verify_trail(directory, public_key, progress)
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror}") from None
    finally:
        if progress is not None:
            progress.clear()
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for chain in report.chains:
        for incomplete in (chain.incomplete_digest, chain.incomplete_tail):
            if incomplete is not None:
                path, nbytes = incomplete
                print(
                    f"warning: {path}: the last {nbytes} bytes are an incomplete line (being "
                    "written, or a crash the writer has not recovered yet); not checked",
                    file=sys.stderr,
                )
    if report.broken is not None:
        print(report.broken)
        return 1
    print("\n".join(_summary(report)))
    return 0


def _writer(args: argparse.Namespace, out: IO[bytes]) -> Callable[[Iterable[Match]], None]:
    """Writes matches as JSON Lines (the stored lines) or table rows, flushing each batch."""
    if args.format == "table":
        out.write(TABLE_HEADER.encode() + b"\n")

        def emit(matches: Iterable[Match]) -> None:
            for match in matches:
                out.write(table_row(match.record).encode() + b"\n")
            out.flush()
    else:

        def emit(matches: Iterable[Match]) -> None:
            for match in matches:
                out.write(match.line + b"\n")
            out.flush()

    return emit


def _warn_skip(path: Path, line: int) -> None:
    print(
        f"warning: {path}:{line}: lines that are not records were skipped "
        "(cellgate audit verify says why)",
        file=sys.stderr,
    )


def cmd_query(args: argparse.Namespace) -> int:
    """Prints the records of the trail in DIR that match every filter given, across all chains
    and segments, in time order: JSON Lines (the records as stored) or a table. --since is
    inclusive, --until exclusive; times are ISO 8601 (UTC unless an offset is given)."""
    from cellgate.audit.query import Filters, query

    directory = _trail_dir(args.dir)
    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be before --until")
    filters = Filters(
        customer=args.customer,
        since=args.since,
        until=args.until,
        event=args.event,
        reason=args.reason,
        cell=args.cell,
        outcome=args.outcome,
        request_id=args.request_id,
        trace_id=args.trace_id,
    )
    emit = _writer(args, sys.stdout.buffer)
    batch: list[Match] = []
    for match in query(directory, filters, _warn_skip):
        batch.append(match)
        if len(batch) >= 256:
            emit(batch)
            batch.clear()
    emit(batch)
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    """Prints the last N records of the trail in DIR across chains, in time order; with -f,
    then follows the records appended (new segments and new chains too) until Ctrl-C."""
    from cellgate.audit.tail import Follower, last_records

    directory = _trail_dir(args.dir)
    if args.poll_s <= 0:
        raise UsageError("--poll-s must be more than 0")
    emit = _writer(args, sys.stdout.buffer)
    if not args.follow:
        emit(last_records(directory, args.lines))
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        follower = Follower(directory)
        emit(follower.last(args.lines))
        follower.run(emit, poll_s=args.poll_s)
    return 0


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="jsonl",
        help="JSON Lines, the records as stored (default), or a fixed-width table",
    )


def add_audit_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``audit verify | query | tail`` to the ``cellgate`` command's subcommands."""
    audit = commands.add_parser(
        "audit",
        help="verify, query and follow the audit trail",
        description="The audit trail's tools. The trail's format: python/cellgate/audit/FORMAT.md.",
    )
    tools = audit.add_subparsers(dest="audit_command", required=True, metavar="TOOL")

    verify = tools.add_parser(
        "verify", help="check every chain and signed digest", description=cmd_verify.__doc__
    )
    verify.add_argument("dir", metavar="DIR", help="the audit trail's directory")
    verify.add_argument(
        "--public-key",
        metavar="FILE",
        help="the digests' Ed25519 public key, PEM (default: DIR/audit-key.pub, self-attested)",
    )
    verify.add_argument(
        "--progress",
        action="store_true",
        help="draw a progress bar on stderr even when it is not a terminal",
    )
    verify.set_defaults(func=_guarded(cmd_verify))

    search = tools.add_parser(
        "query", help="records matching filters, in time order", description=cmd_query.__doc__
    )
    search.add_argument("dir", metavar="DIR", help="the audit trail's directory")
    search.add_argument("--customer", help="the customer id (also admin actions on it)")
    search.add_argument("--since", type=_time, metavar="TIME", help="from this time on")
    search.add_argument("--until", type=_time, metavar="TIME", help="before this time")
    search.add_argument("--event", choices=("request", "admin"), help="the record's event")
    search.add_argument("--reason", help="the reason code (e.g. rate_limited)")
    search.add_argument("--cell", help="the chosen cell's id")
    search.add_argument(
        "--outcome", choices=OUTCOMES, help="the outcome (applied: an admin action taken)"
    )
    search.add_argument("--request-id", metavar="ID", help="the gateway's request id")
    search.add_argument("--trace-id", metavar="ID", help="the W3C trace id (32 hex digits)")
    _add_format(search)
    search.set_defaults(func=_guarded(cmd_query))

    tail = tools.add_parser(
        "tail", help="the last records; -f follows new ones", description=cmd_tail.__doc__
    )
    tail.add_argument("dir", metavar="DIR", help="the audit trail's directory")
    tail.add_argument(
        "-n",
        "--lines",
        type=_count,
        default=10,
        metavar="N",
        help="how many records (default: %(default)s)",
    )
    tail.add_argument("-f", "--follow", action="store_true", help="follow new records until Ctrl-C")
    tail.add_argument(
        "--poll-s",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="with -f, how often to look for new records (default: %(default)s)",
    )
    _add_format(tail)
    tail.set_defaults(func=_guarded(cmd_tail))


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``command`` with usage errors printed (exit 2) and a closed pipe (``| head``) taken
    quietly."""

    def run(args: argparse.Namespace) -> int:
        name = f"cellgate audit {args.audit_command}"
        try:
            return command(args)
        except UsageError as err:
            print(f"{name}: {err}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            return 130

    return run
