"""How long ``cellgate audit verify`` takes on a large trail.

Builds a trail of ``--records`` records (default 1,000,000) across ``--chains`` chains with the
reference writer (``cellgate.reference.audit_trail``: the gateway's default 64 MiB segments, a
digest every 10,000 records), then times the verifier in this process (``--repeat`` times) and
the command itself (a fresh ``cellgate audit verify`` process, start-up included). The trail
stays in the page cache between runs; the first verify after building reads it from there too.

    python benches/audit_verify.py                      # 1,000,000 records in a temporary dir
    python benches/audit_verify.py --dir /tmp/trail --keep --records 200000
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cellgate.audit.verify import segment_bytes_total, verify_trail
from cellgate.reference.audit_trail import ChainWriter, SteppingClock, sample_request
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)
T0 = 1_796_160_000_000_000  # 2026-12-01T21:20:00Z


def build(directory: Path, records: int, chains: int) -> float:
    """Writes the trail; returns the seconds it took."""
    rng = random.Random(0)
    bodies = [sample_request(rng, i) for i in range(1000)]
    clock = SteppingClock(T0, 1_000)
    writers = [
        ChainWriter(directory, n, KEY, clock, digest_every_records=10_000, digest_every_s=None)
        for n in range(chains)
    ]
    started = time.perf_counter()
    for index in range(records):
        writers[index % chains].request(**bodies[index % 1000])
    for writer in writers:
        writer.close()
    return time.perf_counter() - started


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="where to build the trail (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the trail afterwards")
    args = parser.parse_args()

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cellgate-audit-bench-"))
    trail = root / "trail"
    try:
        if trail.exists():
            print(f"using the trail already in {trail}")
        else:
            seconds = build(trail, args.records, args.chains)
            print(
                f"built {args.records:,} records in {args.chains} chains in {seconds:.1f} s "
                f"({args.records / seconds:,.0f} records/s with the reference writer)"
            )
        size = segment_bytes_total(trail)
        print(f"trail: {size / 1e6:,.0f} MB of segments, {cpu_model()}, {os.cpu_count()} CPUs")

        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            report = verify_trail(trail, KEY.public_key())
            timings.append(time.perf_counter() - started)
            assert report.ok, str(report.broken)
        records = report.total("records")
        best, median = min(timings), sorted(timings)[len(timings) // 2]
        print(
            f"verify_trail: {records:,} records, best {best:.2f} s, median {median:.2f} s "
            f"({records / best / 1e6:.2f} M records/s, {size / best / 1e6:,.0f} MB/s)"
        )

        key = root / "key.pub"
        key.write_bytes((trail / "audit-key.pub").read_bytes())
        command = [sys.executable, "-m", "cellgate.cli", "audit", "verify", str(trail)]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "--public-key", str(key)], capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - started
        print(f"cellgate audit verify (exit {done.returncode}): {wall:.2f} s wall")
        print(done.stdout.strip())
        return 0 if done.returncode == 0 else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
