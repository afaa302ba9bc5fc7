"""`cellgate explain --from-audit`: a recorded decision replayed against a configuration says
whether it would be decided the same today, and names what changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from audit_trails import audited_config, records
from cellgate.demo.launch import demo_token
from harness import demo_variant, http_json, own_demo_cell, start_gateway, stop_cell


def replay(config: Path, record: dict, *extra: str) -> subprocess.CompletedProcess:
    argv = ["explain", "--config", str(config), "--from-audit", json.dumps(record), *extra]
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", *argv], capture_output=True, text=True
    )


def test_replay_agrees_on_an_unchanged_configuration_and_names_a_change(
    demo_config: Path, tmp_path: Path
):
    config = audited_config(demo_config, tmp_path / "gw", 'durability = "strict"')
    gateway = start_gateway(config)
    corp = {"Authorization": f"Bearer {demo_token('c-corp-us')}"}
    risky = {"Authorization": f"Bearer {demo_token('c-risky')}"}
    try:
        routed = http_json(gateway.port, "GET", "/api/accounts", corp)
        anonymous = http_json(gateway.port, "GET", "/api/accounts")
        step_up = http_json(gateway.port, "POST", "/api/transfers", risky, b"{}")
    finally:
        assert gateway.stop() == 0
    assert (routed[0], anonymous[0], step_up[0]) == (200, 401, 403)
    found = {r["request_id"]: r for r in records(tmp_path / "gw" / "trail") if "request_id" in r}
    record = {
        name: found[answer[1]["x-request-id"]]
        for name, answer in [("routed", routed), ("anonymous", anonymous), ("step_up", step_up)]
    }

    same = replay(config, record["routed"])
    assert same.returncode == 0, same.stdout + same.stderr
    assert "decides the same" in same.stdout
    assert replay(config, record["step_up"]).returncode == 0
    not_replayable = replay(config, record["anonymous"])
    assert not_replayable.returncode == 3 and "missing_token" in not_replayable.stdout

    # Refusals made after the decision (the body), or by live state (a quota's store), stand.
    for reason, status in (("body_incomplete", 400), ("quota_unavailable", 503)):
        refused = {**record["routed"], "outcome": "refused", "reason": reason, "status": status}
        refused["cell"] = None
        stands = replay(config, refused)
        assert stands.returncode == 0, (reason, stands.stdout + stands.stderr)

    # Today c-corp-us is a retail customer: another tier, so another cell.
    customers = tmp_path / "gw" / "customers.jsonl"
    lines = customers.read_text().splitlines()
    changed = [
        line.replace('"tier": "corporate"', '"tier": "retail"') if '"c-corp-us"' in line else line
        for line in lines
    ]
    customers.write_text("\n".join(changed) + "\n")
    differs = replay(config, record["routed"], "--json")
    assert differs.returncode == 1, differs.stdout + differs.stderr
    explained = json.loads(differs.stdout)
    assert not explained["same"]
    assert any(d.startswith("tier:") for d in explained["differences"])
    assert explained["today"]["tier"] == "retail"

    bad = replay(config, {"nothing": "here"})
    assert bad.returncode == 2 and "not an audit record" in bad.stderr


def test_a_request_sent_to_a_fallback_cell_replays_the_same(demo_config: Path, tmp_path: Path):
    port, cell, text = own_demo_cell(demo_config, "corp-us-east-1")
    try:
        pointed = demo_variant(demo_config, tmp_path / "own", text)
        config = audited_config(pointed, tmp_path / "gw", 'durability = "strict"')
        gateway = start_gateway(config)
        corp = {"Authorization": f"Bearer {demo_token('c-corp-us')}"}
        try:
            # The corporate tier's one us-east cell fails until its breaker opens; then the
            # customer's requests go to an eligible cell of the region (the fallback stage).
            assert http_json(port, "POST", "/_cell/fail?status=500")[0] == 200
            for _ in range(6):
                http_json(gateway.port, "GET", "/api/accounts", corp)
            status, answered, body = http_json(gateway.port, "GET", "/api/accounts", corp)
        finally:
            assert gateway.stop() == 0
    finally:
        stop_cell(cell)
    assert status == 200 and body["cell"].startswith("retail-us-east-"), (status, body)
    found = {r.get("request_id"): r for r in records(tmp_path / "gw" / "trail")}
    record = found[answered["x-request-id"]]
    assert ["corp-us-east-1", "breaker"] in record["cells"], record["cells"]

    replayed = replay(config, record, "--json")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    explained = json.loads(replayed.stdout)
    assert explained["same"] and explained["today"]["cell"] == body["cell"], explained
    assert explained["today"]["fallback"] is True
    told = replay(config, record)
    assert "a cell of the region" in told.stdout, told.stdout
