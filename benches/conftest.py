"""Fixtures for the hot-path benchmarks: a router on the demo topology and many demo tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from cellgate import Router, build_router, load_config
from cellgate.demo import launch


@pytest.fixture(scope="session")
def demo_router() -> Router:
    """A router on the embedded demo topology."""
    return build_router(load_config(Path(launch.__file__).parent / "topology.toml"))


@pytest.fixture(scope="session")
def uncached_tokens() -> list[str]:
    """Distinct valid tokens for one demo customer, each unseen by the router's cache."""
    return [launch.demo_token("c-retail-us", jti=str(i)) for i in range(100_000)]
