"""State one truth across nodes: two `cellgate serve` nodes sharing one real redis-server
(Debian's package, started here on a free loopback port) hold a customer's quota exactly across
both, a revocation made on one refuses on the other within 100 ms, and Redis stopped and
restarted mid-run follows the configured behaviour (money paths refused, node-local limits for
the rest) and loses no revocation, not even one made while it was gone."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from audit_trails import records, write_signing_key
from cellgate.config import ConfigError, parse_config
from cellgate.demo.certs import demo_certificates
from cellgate.demo.launch import demo_admin_token, demo_token
from cellgate.redis_server import RedisServer, RedisTls
from harness import Gateway, demo_variant, http_json, start_gateway

pytestmark = pytest.mark.timeout(180)

ADMIN = {"Authorization": f"Bearer {demo_admin_token()}", "Content-Type": "application/json"}
#: A retail quota that refills one request a minute: what a test admits is the burst, exactly.
SLOW_RETAIL = "rate_limit = { requests = 60, period_s = 3600, burst = 30 }"


def bearer(customer_id: str, **claims) -> dict:
    return {"Authorization": f"Bearer {demo_token(customer_id, **claims)}"}


@dataclass
class Nodes:
    redis: RedisServer
    a: Gateway
    b: Gateway

    def both(self) -> tuple[Gateway, Gateway]:
        return self.a, self.b


def node_config(
    demo_config: Path, directory: Path, redis: RedisServer, state: str = "", text: str = ""
) -> Path:
    """The demo configuration (or ``text``, a variant of it) as one node of a Redis-sharing
    pair: the retail quota slow, the node's own state directory (beside its configuration) and
    audit trail, a fast retry after an outage."""
    text = re.sub(
        r"(\[tiers\.retail\][^\[]*?)rate_limit = \{[^}]*\}",
        lambda m: m[1] + SLOW_RETAIL,
        text or demo_config.read_text(),
        count=1,
    )
    text += f'\n[state]\nredis = "{redis.url}"\nredis_retry_ms = 200\n{state}'
    directory.mkdir(parents=True, exist_ok=True)
    write_signing_key(directory / "audit.pem")
    # Buffered: a strict trail's fsync per answer would be timed with every revocation below.
    text += '\n[audit]\ndirectory = "trail"\nsigning_key_file = "audit.pem"\n'
    text += 'durability = "buffered"\nflush_interval_ms = 20\n'

    return demo_variant(demo_config, directory, text)


def start_nodes(demo_config: Path, root: Path, state: str = "", text: str = "") -> Nodes:
    redis = RedisServer(root / "redis")
    redis.start()
    a = start_gateway(node_config(demo_config, root / "a", redis, state, text))
    try:
        b = start_gateway(node_config(demo_config, root / "b", redis, state, text))
    except BaseException:
        a.stop()
        redis.stop()
        raise
    nodes = Nodes(redis, a, b)
    try:
        wait_until("both nodes subscribed", lambda: all(subscribed(n) for n in nodes.both()))
    except BaseException:
        stop_nodes(nodes)
        raise
    return nodes


def stop_nodes(nodes: Nodes) -> None:
    try:
        for node in nodes.both():
            node.stop()
    finally:
        nodes.redis.stop()


def subscribed(node: Gateway) -> bool:
    status, _, state = http_json(node.port, "GET", "/_cellgate/state", ADMIN)
    return status == 200 and state["redis"]["subscribed"]


def wait_until(what: str, done, timeout_s: float = 10.0) -> float:
    """Polls ``done`` until it holds; returns how long that took."""
    start = time.monotonic()
    while not done():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.002)
    return time.monotonic() - start


def status_of(node: Gateway, headers: dict, method: str = "GET", path: str = "/api/accounts"):
    body = b"{}" if method == "POST" else None
    return http_json(node.port, method, path, headers, body)[0]


@pytest.fixture(scope="module")
def nodes(demo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    pair = start_nodes(demo_config, tmp_path_factory.mktemp("redis-nodes"))
    yield pair
    stop_nodes(pair)


def test_a_customers_burst_holds_exactly_across_two_nodes(nodes: Nodes):
    token = bearer("c-retail-us")
    statuses = [status_of(node, token) for _ in range(40) for node in nodes.both()]
    assert statuses.count(200) == 30, statuses
    assert set(statuses) == {200, 429}
    # Both nodes refuse now: the bucket is one, in Redis.
    assert [status_of(node, token) for node in nodes.both()] == [429, 429]
    state = http_json(nodes.a.port, "GET", "/_cellgate/state", ADMIN)[2]
    assert state["scope"] == "cluster" and state["redis"]["up"]
    # Past its first 429 from Redis a node refuses the flood itself until the retry-after.
    states = [http_json(node.port, "GET", "/_cellgate/state", ADMIN)[2] for node in nodes.both()]
    assert sum(state["redis"]["limited_locally"] for state in states) > 0, states
    status, answered, _ = http_json(nodes.b.port, "GET", "/api/accounts", token)
    assert status == 429 and int(answered["retry-after"]) >= 1
    # Each answer is recorded; a request Redis found over the quota went to no cell.
    trail = nodes.a.config_path.parent / "trail"

    def customers_records() -> list[dict]:
        return [r for r in records(trail) if r.get("customer") == "c-retail-us"]

    wait_until("node a's 41 records on disk", lambda: len(customers_records()) == 41)
    mine = customers_records()
    limited = [r for r in mine if r.get("reason") == "rate_limited"]
    assert len(limited) == 41 - statuses[0::2].count(200)
    assert all(r["outcome"] == "refused" and r.get("cell") is None for r in limited), limited[0]


def test_requests_whose_bodies_never_come_still_count_against_the_quota(nodes: Nodes):
    # Counted at the decision, as a node's own store counts: a client cannot spend cell slots
    # past its quota by never finishing its bodies.
    token = demo_token("c-retail-eu")
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", nodes.a.port), timeout=5) as client:
            client.sendall(
                f"POST /api/orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
                'Content-Length: 100\r\n\r\n{"a"'.encode()
            )
            client.shutdown(socket.SHUT_WR)  # the body ends short
            assert client.recv(64).startswith(b"HTTP/1.1 400")  # body_incomplete
    assert status_of(nodes.b, bearer("c-retail-eu")) == 429


def test_a_revocation_on_one_node_refuses_on_the_other_within_100_ms(nodes: Nodes):
    took = []
    for i in range(5):
        jti = f"cross-node-{i}"
        token = bearer("c-corp-us", jti=jti)
        # Warm the other node's token cache first: a cached token must be refused too.
        assert status_of(nodes.b, token) == 200
        body = f'{{"jti": "{jti}", "forget_after_s": 4102444800}}'.encode()
        status, _, answer = http_json(nodes.a.port, "POST", "/_cellgate/revocations", ADMIN, body)
        assert (status, answer["scope"], answer["lasting"]) == (200, "cluster", True)
        took.append(wait_until("refused on b", lambda t=token: status_of(nodes.b, t) == 401))
    assert max(took) < 0.1, took
    assert status_of(nodes.b, bearer("c-corp-us", jti="never-revoked")) == 200

    old = bearer("c-hnw-us", iat=int(time.time()) - 60)
    cut_off = f'{{"customer_id": "c-hnw-us", "issued_before_s": {time.time() - 30}}}'.encode()
    assert http_json(nodes.b.port, "POST", "/_cellgate/revocations", ADMIN, cut_off)[0] == 200
    assert wait_until("cut-off on a", lambda: status_of(nodes.a, old) == 401) < 0.1
    lift = "/_cellgate/revocations/customers/c-hnw-us"
    assert http_json(nodes.a.port, "DELETE", lift, ADMIN)[2]["lifted"] is True
    assert wait_until("lifted on b", lambda: status_of(nodes.b, old) == 200) < 0.1


def test_redis_stopped_and_restarted_mid_run_refuses_money_paths_and_loses_no_revocation(
    demo_config: Path, tmp_path: Path
):
    nodes = start_nodes(demo_config, tmp_path)
    try:
        before = bearer("c-corp-us", jti="revoked-before")
        body = b'{"jti": "revoked-before", "forget_after_s": 4102444800}'
        assert http_json(nodes.a.port, "POST", "/_cellgate/revocations", ADMIN, body)[0] == 200
        wait_until("reaches b", lambda: status_of(nodes.b, before) == 401)

        nodes.redis.stop()
        payer = bearer("c-corp-us")
        # The first check after the stop finds Redis gone (within its 50 ms timeout).
        status, headers, problem = http_json(nodes.a.port, "POST", "/api/transfers", payer, b"{}")
        assert status == 503 and problem["reason"] == "quota_unavailable", problem
        assert headers["retry-after"] == "1"
        assert status_of(nodes.b, payer, "POST", "/api/transfers") == 503
        # Not a money path: the node's own limits answer.
        assert status_of(nodes.a, payer) == 200
        # Revocations are kept from the node's own copy, and one made now is kept too.
        assert status_of(nodes.b, before) == 401
        meanwhile = bearer("c-corp-us", jti="revoked-meanwhile")
        assert status_of(nodes.b, meanwhile) == 200
        body = b'{"jti": "revoked-meanwhile", "forget_after_s": 4102444800}'
        assert http_json(nodes.a.port, "POST", "/_cellgate/revocations", ADMIN, body)[0] == 200
        assert status_of(nodes.a, meanwhile) == 401
        state = http_json(nodes.a.port, "GET", "/_cellgate/state", ADMIN)[2]["redis"]
        assert not state["up"] and state["refused_quota_checks"] >= 1
        assert state["local_quota_checks"] >= 1

        # Restarted empty: the nodes write back what they know; the other node learns the
        # revocation made meanwhile, and money moves again.
        nodes.redis.start()
        wait_until("meanwhile reaches b", lambda: status_of(nodes.b, meanwhile) == 401)
        wait_until(
            "Redis holds both",
            lambda: nodes.redis.command("ZCARD", "cellgate:revoked:tokens") == "2",
        )
        wait_until(
            "money moves again",
            lambda: status_of(nodes.a, payer, "POST", "/api/transfers") == 200,
        )
        # Node b logged what it heard: restarted while Redis is gone, it still refuses both.
        nodes.b.stop()
        nodes.redis.stop()
        nodes.b = start_gateway(nodes.b.config_path)
        for token in (before, meanwhile):
            assert status_of(nodes.b, token) == 401
    finally:
        stop_nodes(nodes)


def test_a_breaker_opened_on_one_node_refuses_the_cell_on_the_other(
    demo_config: Path, tmp_path: Path, own_retail_cell: tuple[int, str]
):
    port, text = own_retail_cell
    nodes = start_nodes(demo_config, tmp_path, text=text)
    headers = bearer("c-retail-us")
    try:
        # Before: node b spreads the customer over both cells.
        answers = [http_json(nodes.b.port, "GET", "/api/accounts", headers) for _ in range(6)]
        assert "retail-us-east-1" in {body["cell"] for _, _, body in answers}
        assert http_json(port, "POST", "/_cell/fail?status=500")[0] == 200
        # Only node a sees the cell fail, and its breaker opens.
        for _ in range(12):
            status_of(nodes.a, headers)
        assert {c["id"]: c["breaker"] for c in nodes.a.cells()}["retail-us-east-1"] == "open"
        assert http_json(port, "POST", "/_cell/reset")[0] == 200
        # Node b never saw a failure, yet sends the cell nothing while it is open.
        cells = {
            http_json(nodes.b.port, "GET", "/api/accounts", headers)[2]["cell"] for _ in range(10)
        }
        assert cells == {"retail-us-east-2"}
        assert {c["id"]: c["breaker"] for c in nodes.b.cells()}["retail-us-east-1"] == "open"
    finally:
        stop_nodes(nodes)


#: A script that keeps Redis busy (it answers no one) for a second.
BUSY_REDIS = (
    "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
    "while true do t = redis.call('TIME') "
    "if t[1] * 1000000 + t[2] - start > 1000000 then return 1 end end"
)


def redis_answers(redis: RedisServer, within_s: float) -> bool:
    """Whether Redis answers a PING within ``within_s``."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=within_s) as probe:
        probe.sendall(b"*1\r\n$4\r\nPING\r\n")
        try:
            return probe.recv(16).startswith(b"+PONG")
        except TimeoutError:
            return False


def test_a_stalled_redis_costs_a_request_its_short_timeout_and_stalls_nothing_else(nodes: Nodes):
    payer = bearer("c-corp-us")
    busy = threading.Thread(target=nodes.redis.command, args=("EVAL", BUSY_REDIS, "0"))
    busy.start()
    try:
        wait_until("Redis busy", lambda: not redis_answers(nodes.redis, 0.02))
        started = time.monotonic()
        # A quota Redis cannot check within redis_timeout_ms (50): not a money path, so the
        # node's own limits answer; a money path is refused. Long before Redis is free again.
        assert status_of(nodes.a, payer) == 200
        assert status_of(nodes.a, payer, "POST", "/api/transfers") == 503
        assert http_json(nodes.a.port, "GET", "/_cellgate/health")[0] == 200
        assert time.monotonic() - started < 0.6
    finally:
        busy.join()
    wait_until(
        "money moves again",
        lambda: status_of(nodes.a, payer, "POST", "/api/transfers") == 200,
    )


def test_leased_quotas_admit_at_most_a_lease_per_node_beyond_the_burst(
    demo_config: Path, tmp_path: Path
):
    nodes = start_nodes(demo_config, tmp_path, 'redis_quotas = "leased"\nredis_lease = 5\n')
    try:
        token = bearer("c-retail-eu")
        statuses = [status_of(node, token) for _ in range(40) for node in nodes.both()]
        # Leases are counted in Redis when taken, so a burst admits exactly the burst (each
        # node spends what it took); unspent leases could add at most (5 - 1) a node later.
        assert 30 <= statuses.count(200) <= 30 + 2 * 4, statuses
        assert statuses.count(200) + statuses.count(429) == len(statuses)
    finally:
        stop_nodes(nodes)


def test_a_node_reaches_redis_over_mutual_tls(demo_config: Path, tmp_path: Path):
    certificates = demo_certificates(tmp_path / "tls")
    tls = RedisTls(
        ca_file=certificates.ca_file,
        cert_file=certificates.cell_cert_file,
        key_file=certificates.cell_key_file,
        client_cert_file=certificates.gateway_cert_file,
        client_key_file=certificates.gateway_key_file,
    )
    with RedisServer(tmp_path / "redis", tls=tls) as redis:
        assert redis.url.startswith("rediss://")
        # Redis speaks only TLS, and only to a client with a certificate of its CA.
        with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as plain:
            plain.sendall(b"*1\r\n$4\r\nPING\r\n")
            try:
                answer = plain.recv(64)
            except ConnectionResetError:
                answer = b""
            assert b"PONG" not in answer
        files = (
            f'redis_tls_ca_file = "{certificates.ca_file}"\n'
            f'redis_tls_cert_file = "{certificates.gateway_cert_file}"\n'
            f'redis_tls_key_file = "{certificates.gateway_key_file}"\n'
        )
        node = start_gateway(node_config(demo_config, tmp_path / "node", redis, files))
        try:
            wait_until("subscribed over TLS", lambda: subscribed(node))
            assert status_of(node, bearer("c-corp-us"), "POST", "/api/transfers") == 200
            assert redis.command("KEYS", "cellgate:quota:*"), "the quota was checked in Redis"
        finally:
            node.stop()
        # A node that trusts another CA does not take this Redis for the one it wants.
        other_ca = demo_certificates(tmp_path / "other-tls").ca_file
        wrong = files.replace(str(certificates.ca_file), str(other_ca))
        node = start_gateway(node_config(demo_config, tmp_path / "wrong", redis, wrong))
        try:
            answer = http_json(node.port, "POST", "/api/transfers", bearer("c-corp-us"), b"{}")
            assert (answer[0], answer[2]["reason"]) == (503, "quota_unavailable")
            assert not subscribed(node)
        finally:
            node.stop()


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ('redis = "http://127.0.0.1:6379"', "state.redis: 'http://127.0.0.1:6379' is not"),
        ('redis = "redis://x"\nredis_lease = 0', "state.redis_lease"),
        ('redis = "redis://x"\nredis_quotas = "sometimes"', "state.redis_quotas"),
        ('redis = "redis://x"\nredis_unavailable = "open"', "state.redis_unavailable"),
        ('redis = "redis://x"\nredis_timeout_ms = 0', "state.redis_timeout_ms"),
        ('redis = "redis://x"\nredis_tls_ca_file = "ca.pem"', "but state.redis is not rediss://"),
        ('redis = "rediss://x"\nredis_tls_cert_file = "c.pem"', "state.redis_tls_cert_file: give"),
        ('redis = "rediss://x"\nredis_tls_ca_file = "none.pem"', "state.redis_tls_ca_file: cannot"),
    ],
)
def test_bad_redis_settings_are_errors_naming_the_field(demo_config: Path, state: str, error: str):
    text = demo_config.read_text() + f"\n[state]\n{state}\n"
    with pytest.raises(ConfigError) as raised:
        parse_config(text, demo_config.parent)
    assert error in str(raised.value)


def test_check_config_accepts_a_redis_it_cannot_reach_yet(demo_config: Path, tmp_path: Path):
    text = demo_config.read_text() + '\n[state]\nredis = "redis://127.0.0.1:1/0"\n'
    config = demo_variant(demo_config, tmp_path, text)
    checked = subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
