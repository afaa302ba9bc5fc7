"""Fixtures for the hot-path benchmarks (helpers in benchkit.py)."""

from __future__ import annotations

import pytest
from benchkit import bench_config, public_key_config, token_count
from cellgate import Router, build_router
from cellgate.demo import launch


@pytest.fixture(scope="session")
def demo_router() -> Router:
    """A router on the embedded demo topology, every rule on, quotas raised."""
    return build_router(bench_config())


@pytest.fixture(scope="session")
def uncached_tokens(request: pytest.FixtureRequest) -> list[str]:
    """Distinct valid HS256 tokens for one demo customer, each unseen by the router's cache."""
    return [launch.demo_token("c-retail-us", jti=str(i)) for i in range(token_count(request))]


@pytest.fixture(scope="session")
def asymmetric_router() -> Router:
    """The demo router with an ES256 key (kid ``es``) and an EdDSA key (kid ``ed``)."""
    keys = [public_key_config("es", "ES256"), public_key_config("ed", "EdDSA")]
    return build_router(bench_config(keys))
