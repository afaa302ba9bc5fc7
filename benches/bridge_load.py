"""The bridge measured alone: requests/s through granian for a constant answer and for one
bridge round trip per request, in one run, with wrk on loopback.

    python benches/bridge_load.py [--loops rloop,asyncio,uvloop] [--duration 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def wrk(port: int, duration_s: int, connections: int) -> tuple[float, str]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration_s}s",
            "--latency",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    return rps, p99


def measure(target: str, loop: str, args) -> tuple[float, str]:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "rsgi",
            "--loop",
            loop,
            "--workers",
            "1",
            "--runtime-threads",
            "1",
            "--http",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            "--port",
            str(port),
            f"bridge_app:{target}",
        ],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    try:
        wait_listening(port)
        wrk(port, 2, args.connections)
        return wrk(port, args.duration, args.connections)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--loops", default="rloop,asyncio", help="event loops to compare (default: %(default)s)"
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per measured run (default: %(default)s)"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk connections (default: %(default)s)"
    )
    args = parser.parse_args()
    print(f"{'loop':<8} {'shape':<30} {'req/s':>10} {'p99':>9} {'of ceiling':>10}")
    for loop in args.loops.split(","):
        ceiling, p99 = measure("constant", loop, args)
        print(
            f"{loop:<8} {'constant answer (ceiling)':<30} {ceiling:>10.0f} {p99:>9} {'1.00':>10}",
            flush=True,
        )
        rps, p99 = measure("bridge", loop, args)
        print(
            f"{loop:<8} {'+ bridge round trip':<30} {rps:>10.0f} {p99:>9} {rps / ceiling:>10.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
