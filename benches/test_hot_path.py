"""Per-call cost of the core's hot path, with pytest-benchmark.

Run on demand: ``pytest benches/test_hot_path.py --benchmark-enable --benchmark-group-by group``.
In CI they run once each as correctness checks (``--benchmark-disable``).
"""

from __future__ import annotations

import asyncio

import pytest
from benchkit import signed_tokens, token_count
from cellgate import Bridge, Router
from cellgate.demo.launch import demo_token

CLIENT = "203.0.113.7:53211"
AGENT = "bench/1.0"


@pytest.mark.benchmark(group="decide")
def test_decide_cached_token(benchmark, demo_router: Router):
    authorization = f"Bearer {demo_token('c-retail-us')}"
    decision = benchmark(demo_router.decide, "GET", "/api/accounts", authorization, CLIENT, AGENT)
    assert decision.ok and decision.cell_id.startswith("retail-us-east")


@pytest.mark.benchmark(group="decide")
def test_decide_cached_token_path_to_normalise(benchmark, demo_router: Router):
    """The canonical path's slow case: dot segments and repeated slashes to resolve."""
    authorization = f"Bearer {demo_token('c-retail-us')}"
    path = "/api//./statements/../accounts"
    decision = benchmark(demo_router.decide, "GET", path, authorization, CLIENT, AGENT)
    assert decision.ok and decision.path == "/api/accounts"


def time_fresh_tokens(benchmark, router: Router, tokens: list[str]):
    """Times decide() on tokens the cache has not seen: one per call, 10 calls a round."""
    headers = iter([f"Bearer {t}" for t in tokens])

    def decide_fresh():
        return router.decide("GET", "/api/accounts", next(headers), CLIENT, AGENT)

    rounds = max(1, len(tokens) // 10 - 10)
    return benchmark.pedantic(decide_fresh, rounds=rounds, iterations=10)


@pytest.mark.benchmark(group="decide")
def test_decide_uncached_hs256_token(benchmark, demo_router: Router, uncached_tokens: list[str]):
    assert time_fresh_tokens(benchmark, demo_router, uncached_tokens).ok


@pytest.mark.benchmark(group="decide")
@pytest.mark.parametrize(("alg", "kid"), [("ES256", "es"), ("EdDSA", "ed")])
def test_decide_uncached_public_key_token(benchmark, request, asymmetric_router, alg, kid):
    tokens = signed_tokens(alg, kid, token_count(request))
    decision = time_fresh_tokens(benchmark, asymmetric_router, tokens)
    assert decision.ok, decision.detail


@pytest.mark.benchmark(group="decide")
def test_decide_refused_bad_signature(benchmark, demo_router: Router):
    token = demo_token("c-retail-us")
    forged = f"Bearer {token[:-4]}AAAA"
    decision = benchmark(demo_router.decide, "GET", "/api/accounts", forged, CLIENT, AGENT)
    assert decision.reason in ("bad_signature", "malformed")


@pytest.mark.benchmark(group="bridge")
def test_bridge_noop_round_trip(benchmark):
    """One future resolved through the bridge's descriptor and awaited on the loop, 64 in flight."""
    loop = asyncio.new_event_loop()
    bridge = Bridge(loop)
    loop.add_reader(bridge.fileno(), bridge.drain)
    batch = 64

    async def round_trips():
        for result in await asyncio.gather(*(bridge.noop() for _ in range(batch))):
            assert result is None

    try:
        benchmark(lambda: loop.run_until_complete(round_trips()))
    finally:
        loop.remove_reader(bridge.fileno())
        loop.close()
    benchmark.extra_info["futures_per_round"] = batch


def test_bridge_resolves_every_future_once():
    loop = asyncio.new_event_loop()
    bridge = Bridge(loop)
    loop.add_reader(bridge.fileno(), bridge.drain)

    async def many():
        return await asyncio.gather(*(bridge.noop() for _ in range(5000)))

    try:
        results = loop.run_until_complete(asyncio.wait_for(many(), 10))
    finally:
        loop.remove_reader(bridge.fileno())
        loop.close()
    assert results == [None] * 5000


def test_uncached_tokens_are_distinct(uncached_tokens: list[str]):
    assert len(set(uncached_tokens)) == len(uncached_tokens) >= 200
