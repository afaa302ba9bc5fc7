"""cellgate's own cost per request, without granian: the gateway's RSGI handler driven in-process.

The same configuration, customers and two nginx cells as `e2e_load.py`, but no HTTP server in
front: an event loop runs `Gateway.__rsgi__` on stand-in scope and protocol objects (what granian
hands the handler), with `--concurrency` requests in flight, and counts this process's CPU time.
What it prints is what cellgate adds to granian's own cost per request (the `granian` row of
`e2e_load.py`): the decision, the forward to a cell and the answer, Python and the kernel's socket
work included.

    python benches/gateway_alone.py                     # 100,000 requests, 64 in flight
    python benches/gateway_alone.py --requests 8192 --warmup 64

`--mtls` puts the cells behind mTLS (`e2e_load.py`'s `cellgate-mtls` cells), to price TLS alone.

`--instructions` runs it twice under `valgrind --tool=callgrind`, for 2,048 and 8,192 requests,
and prints the user-space instructions per request (the difference of the totals over the
difference of the counts, so start-up cancels out): a figure that, unlike time, barely moves with
the machine's other load (about 1% between runs), for comparing two builds of cellgate:

    python benches/gateway_alone.py --instructions
    python benches/gateway_alone.py --instructions --mtls
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import e2e_load as e2e
from cellgate.admin import AdminApi
from cellgate.config import admin_secret, build_router, load_config
from cellgate.gateway import Gateway


class Headers(dict):
    """granian's request headers: `get`, `in`, and `items()` as a list."""

    def items(self):  # type: ignore[override]
        return list(super().items())


class Scope:
    """What granian's RSGI scope gives the handler for `GET /api/accounts`."""

    proto = "http"
    http_version = "1.1"
    scheme = "http"
    #: Origin-form: granian gives an authority only for an absolute-form target.
    authority = None
    method = "GET"
    path = "/api/accounts"
    query_string = ""
    client = "127.0.0.1:50000"

    def __init__(self, token: str) -> None:
        self.headers = Headers(
            {"host": "127.0.0.1", "authorization": f"Bearer {token}", "user-agent": "wrk"}
        )


class Protocol:
    """Keeps the status the handler answered."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.status = status


async def client(gateway: Gateway, scopes: list[Scope], first: int, count: int) -> int:
    """Sends `count` requests one after another; returns how many were not answered 200."""
    failures = 0
    for k in range(count):
        proto = Protocol()
        await gateway.__rsgi__(scopes[(first + k) % len(scopes)], proto)
        failures += proto.status != 200
    return failures


async def drive(gateway: Gateway, scopes: list[Scope], per_client: int, clients: int) -> int:
    failures = await asyncio.gather(
        *(client(gateway, scopes, i * 7919, per_client) for i in range(clients))
    )
    return sum(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=32_000, help="requests before measuring")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    parser.add_argument("--loop", choices=("rloop", "asyncio", "uvloop"), default="rloop")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count user-space instructions per request under callgrind instead of timing",
    )
    parser.add_argument(
        "--mtls", action="store_true", help="reach the cells over mTLS (pooled, as plain ones)"
    )
    args = parser.parse_args(argv)
    if min(args.requests, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be >= 1, --warmup >= 0")
    if args.instructions:
        return count_instructions(args)

    e2e.raise_fd_limit()
    procs = e2e.Processes()
    workdir = Path(tempfile.mkdtemp(prefix="cellgate-alone-"))
    try:
        fixtures = e2e.make_fixtures(workdir)
        tls = None
        if args.mtls:
            tls, cell_ports, _ = e2e.start_mtls_cells(procs, workdir)
        else:
            cell_ports = [e2e.free_port(), e2e.free_port()]
            e2e.start_cells(procs, workdir, cell_ports)
        config_path = workdir / "cellgate.toml"
        config_path.write_text(
            e2e.cellgate_config(fixtures.secret, cell_ports, fixtures.profiles_path, tls=tls),
            encoding="utf-8",
        )
        config = load_config(config_path)
        router = build_router(config)
        gateway = Gateway(
            router,
            max_request_bytes=config.forward.max_request_bytes,
            admin=AdminApi(router, admin_secret(config)),
        )
        scopes = [Scope(token) for token in fixtures.tokens]
        loop = new_loop(args.loop)
        gateway.__rsgi_init__(loop)
        per_client = max(1, args.requests // args.concurrency)
        if args.warmup:
            warm = max(1, args.warmup // args.concurrency)
            loop.run_until_complete(drive(gateway, scopes, warm, args.concurrency))
        cpu, wall = time.process_time(), time.perf_counter()
        failures = loop.run_until_complete(drive(gateway, scopes, per_client, args.concurrency))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        gateway.__rsgi_del__(loop)
        count = per_client * args.concurrency
        print(
            f"{count} requests ({args.concurrency} in flight, {args.loop}"
            f"{', cells over mTLS' if args.mtls else ''}): "
            f"{count / wall:.0f} req/s, {cpu * 1e6 / count:.2f} us CPU per request, "
            f"{failures} not 200"
        )
        return 1 if failures else 0
    except e2e.BenchError as err:
        print(f"gateway_alone: {err}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()


#: The request counts of the two callgrind runs.
CALLGRIND_COUNTS = (2048, 8192)


def count_instructions(args: argparse.Namespace) -> int:
    """Runs this script under callgrind at both counts; prints instructions per request."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("gateway_alone: valgrind is not installed", file=sys.stderr)
        return 2
    totals = []
    for count in CALLGRIND_COUNTS:
        print(f"callgrind: {count} requests ...", flush=True)
        with tempfile.TemporaryDirectory() as out:
            done = subprocess.run(
                [
                    valgrind,
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}/callgrind.out",
                    sys.executable,
                    __file__,
                    *("--requests", str(count), "--warmup", str(args.concurrency)),
                    *("--concurrency", str(args.concurrency), "--loop", args.loop),
                    *(["--mtls"] if args.mtls else []),
                ],
                capture_output=True,
                text=True,
            )
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode != 0 or collected is None:
            print(f"gateway_alone: callgrind run failed:\n{done.stdout}{done.stderr}")
            return 2
        totals.append(int(collected.group(1)))
    per_request = (totals[1] - totals[0]) / (CALLGRIND_COUNTS[1] - CALLGRIND_COUNTS[0])
    cells = ", cells over mTLS" if args.mtls else ""
    print(f"{per_request:,.0f} user-space instructions per request ({args.loop}{cells})")
    return 0


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "rloop":
        import rloop

        return rloop.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


if __name__ == "__main__":
    sys.exit(main())
