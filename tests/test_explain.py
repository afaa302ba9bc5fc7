"""Explanations: what decide() would do and why, through the API and `cellgate explain`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cellgate
import msgspec
import orjson
import pytest
from cellgate import build_router, load_config
from cellgate.demo.launch import demo_token
from cellgate.explain import explain, render

DEMO = Path(cellgate.__file__).parent / "demo" / "topology.toml"


@pytest.fixture
def router():
    return build_router(load_config(DEMO))


def test_a_high_risk_transfer_is_explained_step_by_step(router):
    why = explain(router, "POST", "/api/transfers", demo_token("c-risky"), "203.0.113.9")
    assert why["token"]["customer"] == "c-risky"
    assert why["profile"]["flags"] == ["HIGH_RISK"]
    assert why["risk"]["level"] == "HIGH"
    kinds = {f["kind"] for f in why["risk"]["factors"]}
    assert {"high_risk_network", "money_path"} <= kinds
    assert why["step_up"] == {
        "required": True,
        "satisfied": False,
        "missing": 're-authenticate with amr including "mfa", auth_time within the last 900 s',
    }
    cells = {cell["id"]: cell for cell in why["cells"]}
    assert cells["retail-us-east-1"]["excluded_by"] == "compliance"
    assert cells["retail-us-east-1"]["detail"] == (
        "not compliant: HIGH_RISK needs encryption maximum or stronger"
    )
    assert cells["retail-eu-west-1"]["excluded_by"] == "region"
    assert cells["hnw-us-east-1"]["fallback_candidate"] is True
    assert why["chosen"]["id"] == "hnw-us-east-1" and why["chosen"]["stage"] == "fallback"
    assert why["decision"]["status"] == 403 and why["decision"]["reason"] == "step_up_required"
    text = render(why)
    assert "would go  hnw-us-east-1 (fallback)" in text
    assert "+0.30 high_risk_network: client 203.0.113.9 is in demo-high-risk" in text


def test_an_explanation_counts_nothing(router):
    for _ in range(100):
        assert explain(router, "GET", "/api/accounts", demo_token("c-retail-us"))["decision"]["ok"]
    decision = router.decide(
        "GET", "/api/accounts", f"Bearer {demo_token('c-retail-us')}", "127.0.0.1:1"
    )
    assert dict(decision.fields)["ratelimit"].startswith('"retail";r=59;'), "quota untouched"
    decision.release()
    assert all(cell["in_flight"] == 0 for cell in router.cells())


def test_refusals_before_the_profile_stop_there(router):
    why = explain(router, "GET", "/api/accounts", "not.a.token")
    assert why["token"]["ok"] is False and why["decision"]["reason"] == "malformed"
    assert "cells" not in why
    why = explain(router, "GET", "/api/accounts", demo_token("nobody"))
    assert why["decision"]["reason"] == "customer_not_found"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "explain", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_prints_text_or_json_and_exits_by_the_decision(tmp_path: Path):
    routed = run_cli("--config", str(DEMO), "--token", demo_token("c-corp-eu"), "--path", "/api/x")
    assert routed.returncode == 0, routed.stderr
    assert "chosen    corp-eu-west-1 (primary): least loaded" in routed.stdout
    assert "decision  routed (200)" in routed.stdout
    refused = run_cli(
        "--config", str(DEMO), "--token", "Bearer x.y.z", "--path", "/api/x", "--json"
    )
    assert refused.returncode == 1
    assert orjson.loads(refused.stdout)["decision"]["reason"] == "malformed"
    (tmp_path / "bad.toml").write_text("[jwt]\n")
    bad = run_cli("--config", str(tmp_path / "bad.toml"), "--token", "t", "--path", "/")
    assert bad.returncode == 2 and "configuration error" in bad.stderr


def test_the_cli_shows_the_canonical_path_and_the_trace(tmp_path: Path):
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    token = demo_token("c-risky")
    spelled = run_cli(
        *("--config", str(DEMO), "--token", token, "--method", "POST"),
        *("--path", "/api/./x/..//%74ransfers?amount=5", "--header", f"traceparent: {parent}"),
    )
    assert spelled.returncode == 1, spelled.stderr
    assert "request   POST /api/transfers from 127.0.0.1" in spelled.stdout
    assert "canonical path of '/api/./x/..//transfers'" in spelled.stdout
    assert "trace id: 4bf92f3577b34da6a3ce929d0e0e4736" in spelled.stdout
    assert "money_path: POST /api/transfers matches /api/transfers*" in spelled.stdout
    refused = run_cli("--config", str(DEMO), "--token", token, "--path", "/api%5ctransfers")
    assert refused.returncode == 1
    assert "refused 400 bad_path: backslash at byte 4 of the path" in refused.stdout
    bad_header = run_cli("--config", str(DEMO), "--token", token, "--path", "/", "--header", "x")
    assert bad_header.returncode == 2 and "must be 'Name: value'" in bad_header.stderr


def test_a_trusted_proxy_shows_in_the_explanation():
    config = load_config(DEMO)
    router = build_router(
        msgspec.structs.replace(
            config, forward=msgspec.structs.replace(config.forward, trusted_proxies=["10.0.0.0/8"])
        )
    )
    why = explain(
        router,
        "GET",
        "/api/accounts",
        demo_token("c-retail-us"),
        "10.0.0.5:4000",
        headers=[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.1.1.1")],
    )
    assert why["request"]["client"] == "203.0.113.9"
    assert why["request"]["via"] == ["10.1.1.1", "10.0.0.5"]
    assert "high_risk_network" in {f["kind"] for f in why["risk"]["factors"]}
