"""The core's Python API: decisions, slots, live cell state, profiles and the clock."""

from __future__ import annotations

import gc
from pathlib import Path

import cellgate
import orjson
import pytest
from cellgate import Clock, build_router, load_config
from cellgate.demo.launch import demo_token

DEMO = Path(cellgate.__file__).parent / "demo" / "topology.toml"


@pytest.fixture
def router() -> cellgate.Router:
    return build_router(load_config(DEMO))


def decide(router, customer: str = "c-retail-us", **claims):
    return router.decide(
        "GET", "/api/accounts", f"Bearer {demo_token(customer, **claims)}", "198.51.100.4:4431"
    )


def in_flight(router) -> dict[str, int]:
    return {cell["id"]: cell["in_flight"] for cell in router.cells()}


def test_a_routed_decision_holds_a_slot_until_released(router):
    decision = decide(router, "c-corp-eu")
    assert decision.ok and decision.status == 200 and decision.reason is None
    assert (decision.customer_id, decision.cell_id, decision.encryption) == (
        "c-corp-eu",
        "corp-eu-west-1",
        "enhanced",
    )
    assert decision.holds_slot and decision.problem is None
    assert in_flight(router)["corp-eu-west-1"] == 1
    assert decision.release() is True
    assert decision.release() is False
    assert not decision.holds_slot
    assert in_flight(router)["corp-eu-west-1"] == 0


def test_a_dropped_decision_gives_its_slot_back(router):
    decisions = [decide(router, "c-hnw-ap") for _ in range(5)]
    assert in_flight(router)["hnw-ap-southeast-1"] == 5
    del decisions
    gc.collect()
    assert in_flight(router)["hnw-ap-southeast-1"] == 0


def test_least_loaded_spreads_a_tier_over_its_cells(router):
    held = [decide(router, "c-retail-us") for _ in range(10)]
    counts = in_flight(router)
    assert counts["retail-us-east-1"] == counts["retail-us-east-2"] == 5
    assert {d.cell_id for d in held} == {"retail-us-east-1", "retail-us-east-2"}


def test_request_ids_are_unique(router):
    ids = {decide(router).request_id for _ in range(1000)}
    assert len(ids) == 1000


def test_unhealthy_cells_are_skipped_and_unknown_cells_are_a_key_error(router):
    router.set_cell_health("retail-us-east-1", False)
    assert {decide(router).cell_id for _ in range(6)} == {"retail-us-east-2"}
    router.set_cell_health("retail-us-east-2", False)
    # The region's other cells take over (fallback), never another region's.
    assert decide(router).cell_id in {"corp-us-east-1", "hnw-us-east-1"}
    for cell in ("corp-us-east-1", "hnw-us-east-1"):
        router.set_cell_health(cell, False)
    refused = decide(router)
    assert (refused.ok, refused.status, refused.reason) == (False, 503, "no_eligible_cell")
    assert "retail-us-east-1: unhealthy" in refused.detail
    assert "hnw-us-east-1: unhealthy" in refused.detail
    with pytest.raises(KeyError, match="nope"):
        router.set_cell_health("nope", True)


def test_the_problem_of_a_refusal_is_rfc9457(router):
    refused = router.decide("GET", "/api/x", None, "127.0.0.1:1")
    status, headers, body = refused.problem
    problem = orjson.loads(body)
    assert status == 401 == problem["status"]
    assert dict(headers)["content-type"] == "application/problem+json"
    assert dict(headers)["www-authenticate"] == "Bearer"
    assert problem["reason"] == "missing_token"
    assert problem["request_id"] == refused.request_id == dict(headers)["x-request-id"]
    assert not refused.holds_slot and refused.release() is False


def test_profiles_can_be_upserted_and_removed_at_run_time(router):
    assert decide(router, "c-new").reason == "customer_not_found"
    router.upsert_profile(b'{"customer_id": "c-new", "tier": "hnw", "region": "us-east"}')
    assert decide(router, "c-new").cell_id == "hnw-us-east-1"
    assert router.profile_count == 8
    assert router.remove_profile("c-new") is True
    assert router.remove_profile("c-new") is False
    assert decide(router, "c-new").reason == "customer_not_found"
    with pytest.raises(ValueError, match="unknown tier"):
        router.upsert_profile(b'{"customer_id": "x", "tier": "gold", "region": "us-east"}')
    with pytest.raises(ValueError, match="profile"):
        router.upsert_profile(b"not json")


def test_forwarding_a_refused_or_spent_decision_is_a_value_error(router):
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        bridge = cellgate.Bridge(loop)
        refused = router.decide("GET", "/api/x", None, "127.0.0.1:1")
        with pytest.raises(ValueError, match="refused"):
            router.forward(bridge, refused, "GET", "", [], b"")
        routed = decide(router)
        routed.release()
        with pytest.raises(ValueError, match="already forwarded"):
            router.forward(bridge, routed, "GET", "", [], b"")
    finally:
        loop.close()


def test_serve_answers_a_refusal_at_once_and_forwards_a_routed_request(router):
    import asyncio

    loop = asyncio.new_event_loop()
    bridge = cellgate.Bridge(loop)
    loop.add_reader(bridge.fileno(), bridge.drain)
    try:
        status, headers, body = router.serve(
            bridge, "GET", "/api/accounts", "", [("user-agent", "t")], "198.51.100.4:4431"
        )
        assert status == 401
        assert orjson.loads(body)["reason"] == "missing_token"
        assert dict(headers)["content-type"] == "application/problem+json"

        token = f"Bearer {demo_token('c-retail-us')}"
        answer = router.serve(
            bridge,
            "GET",
            "/api/accounts",
            "page=2",
            [("authorization", token), ("user-agent", "t")],
            "198.51.100.4:4431",
        )
        assert asyncio.isfuture(answer)
        # The demo cells are not running here: the forward fails, and the slot comes back.
        status, headers, body = loop.run_until_complete(asyncio.wait_for(answer, 10))
        assert status == 502
        assert orjson.loads(body)["reason"] == "cell_unreachable"
        assert sum(in_flight(router).values()) == 0
    finally:
        loop.remove_reader(bridge.fileno())
        loop.close()


def test_a_manual_clock_drives_token_expiry():
    clock = Clock.manual(1_000_000)
    router = build_router(load_config(DEMO), clock=clock)
    token = f"Bearer {demo_token('c-retail-us')}"
    # demo tokens are minted against the real time; move the clock to just before they expire.
    import jwt

    exp = jwt.decode(token.split()[1], options={"verify_signature": False})["exp"]
    clock.set(exp + 29)
    assert router.decide("GET", "/", token, "127.0.0.1:1").ok
    clock.advance(1)
    assert router.decide("GET", "/", token, "127.0.0.1:1").reason == "expired"
    assert clock.is_manual and clock.now() == exp + 30
    with pytest.raises(ValueError, match="system clock"):
        Clock().set(1.0)
    with pytest.raises(ValueError, match="finite"):
        clock.set(float("nan"))
