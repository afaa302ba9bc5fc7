"""Capacity: 1,000,000 profiles fit in at most 256 MB of the core's memory.

Measured in a fresh interpreter (so pytest's own memory does not blur it): how much the resident
set grows while the router builds its table from a source already in memory. The parse's own
scratch (a map of first lines for duplicate ids) is freed by then, so this is the table itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(180)

MEASURE = textwrap.dedent(
    """
    import gc, json, sys
    from cellgate import _core
    from cellgate.config import compile_settings, load_config, profile_zones
    import cellgate, pathlib

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

    config = load_config(pathlib.Path(cellgate.__file__).parent / "demo" / "topology.toml")
    count = int(sys.argv[1])
    tiers, regions = ("retail", "corporate", "hnw"), ("us-east", "eu-west")
    zones = ("Europe/Berlin", "America/New_York", None)
    def line(i):
        region = regions[i % 2]
        tier = "hnw" if region == "us-east" and i % 3 == 2 else tiers[i % 2]
        profile = {"customer_id": f"customer-{i:07d}", "tier": tier, "region": region,
                   "risk": (i % 100) / 100}
        if i % 7 == 0:
            profile["flags"] = ["EU_RESIDENT"] if region == "eu-west" else ["PII_RESTRICTED"]
        if zones[i % 3]:
            profile["timezone"] = zones[i % 3]
        return json.dumps(profile)
    source = "\\n".join(line(i) for i in range(count)).encode()
    settings = compile_settings(config, profile_zones(source))
    gc.collect()
    before = rss_mb()
    router = _core.Router(settings, source, None)
    print(json.dumps({"profiles": router.profile_count, "table_mb": rss_mb() - before}))
    """
)


def test_a_million_profiles_fit_in_256_mb():
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, "1000000"], capture_output=True, text=True, timeout=170
    )
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout)
    assert measured["profiles"] == 1_000_000
    assert measured["table_mb"] <= 256, measured
