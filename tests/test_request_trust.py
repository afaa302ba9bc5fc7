"""What a cell can trust, tried as an attacker would, against a real gateway and real cells.

- Every spelling of a path: the path the risk rules saw is the path the cell serves, or the
  request is refused 400; no spelling of a money path escapes the money-path factor.
- The client address: forged X-Forwarded-For, X-Real-IP and Forwarded from an untrusted peer
  change nothing; from a trusted proxy the right entry is used.
- Identity: the cell learns the verified customer, tier, risk level and step-up, never the bearer
  token, and never what the client claims under those names.
- Trace context: continued, created and repaired.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import orjson
import pytest
from cellgate.demo.launch import demo_token
from cellgate.reference.target import PathRefused, canonicalize
from harness import Gateway, demo_variant, http_json, start_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MONEY_PATTERNS = ["/api/transfers*", "/api/*/withdraw*", "/api/payments*"]
MONEY_METHODS = ("POST", "PUT", "PATCH")
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _unlimited(config_text: str) -> str:
    """The demo configuration with quotas no property test runs into."""
    return re.sub(
        r"rate_limit = \{[^}]*\}",
        "rate_limit = { requests = 6000000, period_s = 60, burst = 1000000 }",
        config_text,
    )


@pytest.fixture(scope="module")
def open_gateway(demo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway trusting no proxy, without quotas in the way."""
    text = _unlimited(demo_config.read_text())
    gateway = start_gateway(demo_variant(demo_config, tmp_path_factory.mktemp("open"), text))
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def behind_proxy(demo_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that trusts loopback as its load balancer."""
    text = _unlimited(demo_config.read_text()) + '\n[forward]\ntrusted_proxies = ["127.0.0.0/8"]\n'
    gateway = start_gateway(demo_variant(demo_config, tmp_path_factory.mktemp("proxied"), text))
    yield gateway
    gateway.stop()


def bearer(customer: str, **claims) -> dict[str, str]:
    return {"Authorization": f"Bearer {demo_token(customer, **claims)}"}


def is_money_path(path: str) -> bool:
    for pattern in MONEY_PATTERNS:
        regex = ".*".join(re.escape(part) for part in pattern.lower().split("*"))
        if re.fullmatch(regex, path.lower()):
            return True
    return False


def raw_request(port: int, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Sends `target` exactly as given; (status, body)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{head}"
    if method in MONEY_METHODS:
        request += "Content-Length: 2\r\n\r\n{}"
    else:
        request += "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request.encode("latin-1"))
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status_line, _, rest = reply.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


# Spellings of a path: every character maybe percent-encoded (either hex case, or twice), noise
# segments (".", "x/..", empty), mixed case, and a sprinkling of characters no rule should see.
_PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,=:@"


@st.composite
def spelled_char(draw, char: str) -> str:
    how = draw(st.sampled_from(["plain", "plain", "plain", "lower", "upper", "twice"]))
    code = f"{ord(char):02x}"
    if how == "plain" and char in _PLAIN + "/":
        return char
    if how == "lower":
        return f"%{code}"
    if how == "twice":
        return f"%25{code.upper()}"
    return f"%{code.upper()}"


@st.composite
def spelled_path(draw) -> str:
    base = draw(
        st.sampled_from(
            ["/api/transfers", "/api/transfers/9", "/api/accounts", "/api/x/withdraw", "/api"]
        )
    )
    # Tokens: (text, respell) -- literal escapes and refused characters are kept as written.
    tokens: list[tuple[str, bool]] = []
    for segment in base.strip("/").split("/"):
        for _ in range(draw(st.integers(0, 2))):
            noise = draw(st.sampled_from([".", "", "zz/..", "..", "%2e", "%2E%2e"]))
            tokens.append(("/", True))
            tokens.append((noise, "%" not in noise))
        if draw(st.booleans()):
            segment = "".join(c.upper() if draw(st.booleans()) else c for c in segment)
        tokens.append(("/", True))
        tokens.append((segment, True))
    if draw(st.integers(0, 9)) == 0:
        odd = draw(st.sampled_from([";x=1", "\\x", "%00", "%0a", "%5c", "%2f", "%252f", "%7f"]))
        tokens.append((odd, False))
    if draw(st.booleans()):
        tokens.append(("/", True))
    return "".join(
        "".join(draw(spelled_char(c)) for c in text) if respell else text
        for text, respell in tokens
    )


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=spelled_path(),
    method=st.sampled_from(["GET", "POST", "PUT"]),
    customer=st.sampled_from(["c-hnw-us", "c-risky"]),
)
def test_the_path_risk_sees_is_the_path_the_cell_serves(
    open_gateway: Gateway, target: str, method: str, customer: str
):
    status, body = raw_request(open_gateway.port, method, target, bearer(customer))
    if not target.startswith("/"):
        # Not origin-form on the wire: the HTTP server refuses it before the gateway runs.
        assert status == 400, (target, status, body)
        return
    # What granian hands the application: the path percent-decoded once.
    try:
        canonical = canonicalize(unquote(target, errors="replace"))
    except PathRefused:
        assert status == 400, (target, status, body)
        return
    money = method in MONEY_METHODS and is_money_path(canonical.path)
    if customer == "c-risky" and money:
        # Base risk 0.6 + money 0.2 = HIGH without step-up proof: never reaches a cell.
        assert status == 403, (target, canonical, status, body)
        assert b"step_up_required" in body
        return
    assert status in (200, 404), (target, canonical, status, body)
    echo = orjson.loads(body)
    assert echo["path"] == canonical.path, (target, echo)
    assert echo["raw_path"] == canonical.wire, (target, echo)
    if customer == "c-hnw-us" and status == 200:
        # Base 0.3 (+0.1 at unusual hours): MEDIUM exactly when the money factor fired.
        expected = "MEDIUM" if money else "LOW"
        assert echo["headers"]["x-risk-level"] == expected, (target, canonical, echo)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/api/transfers;jsessionid=1", "path parameter"),
        ("/api%5ctransfers", "backslash"),
        ("/api/transfers%00", "U+0000"),
        ("/api/transfers%0d%0aX-Evil:%201", "U+000D"),
        ("/api%252Ftransfers", "escaped slash"),
        ("/api/%ff", "UTF-8"),
        ("*", "origin-form"),
        ("http://cell.internal/api/accounts", "absolute-form"),
    ],
)
def test_targets_no_rule_should_see_are_refused_with_bad_path(
    open_gateway: Gateway, target: str, why: str
):
    status, body = raw_request(open_gateway.port, "GET", target, bearer("c-retail-us"))
    assert status == 400, body
    problem = orjson.loads(body)
    assert problem["reason"] == "bad_path"
    assert why in problem["detail"]
    assert re.fullmatch(r"[0-9a-f]{32}", problem["trace_id"])


def test_a_money_path_spelled_otherwise_still_needs_step_up(open_gateway: Gateway):
    for target in [
        "/api/./transfers",
        "/api//transfers",
        "/api/x/../transfers",
        "/%61pi/transfers",
        "/api%2Ftransfers",
        "/API/Transfers",
        "//api/transfers/",
        "/api/transfers/%2e",
    ]:
        status, body = raw_request(open_gateway.port, "POST", target, bearer("c-risky"))
        assert status == 403, (target, body)
        assert b"step_up_required" in body, target
    mfa = bearer("c-risky", amr=["pwd", "mfa"], auth_time=int(time.time()))
    status, body = raw_request(open_gateway.port, "POST", "/api/x/../transfers", mfa)
    assert status == 200, body
    assert orjson.loads(body)["path"] == "/api/transfers"


def test_forged_client_addresses_from_an_untrusted_peer_change_nothing(open_gateway: Gateway):
    forged = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Real-IP": "203.0.113.7",
        "Forwarded": "for=203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "bank.example",
    }
    for headers in (forged, {"X-Forwarded-For": "10.1.1.1, 203.0.113.7"}):
        status, _, echo = http_json(
            open_gateway.port, "GET", "/api/accounts", {**bearer("c-hnw-us"), **headers}
        )
        assert status == 200
        sent = echo["headers"]
        assert sent["x-forwarded-for"] == "127.0.0.1"
        assert "x-real-ip" not in sent
        assert "forwarded" not in sent
        assert sent["x-forwarded-proto"] == "http", "the connection's scheme, not the client's"
        assert sent["x-forwarded-host"] == f"127.0.0.1:{open_gateway.port}"
        # 203.0.113.0/24 is the demo's high-risk network: had it counted, risk would be MEDIUM.
        assert sent["x-risk-level"] == "LOW"


def test_a_trusted_proxy_names_the_client(behind_proxy: Gateway):
    headers = {**bearer("c-hnw-us"), "X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    status, _, echo = http_json(behind_proxy.port, "GET", "/api/accounts", headers)
    assert status == 200
    sent = echo["headers"]
    # The right-most address that is not a trusted proxy: 203.0.113.7, a high-risk network.
    assert sent["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert sent["x-risk-level"] == "MEDIUM"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-host"] == f"127.0.0.1:{behind_proxy.port}"


def test_the_cell_learns_what_the_gateway_verified_and_never_the_token(open_gateway: Gateway):
    headers = {
        **bearer("c-corp-us"),
        "X-Customer-ID": "c-hnw-us",
        "x-customer-tier": "hnw",
        "X-RISK-LEVEL": "low",
        "X-Step-Up": "true",
    }
    status, _, echo = http_json(open_gateway.port, "GET", "/api/positions", headers)
    assert status == 200
    sent = echo["headers"]
    assert "authorization" not in sent
    assert sent["x-customer-id"] == "c-corp-us"
    assert sent["x-customer-tier"] == "corporate"
    assert sent["x-risk-level"] == "LOW"
    assert sent["x-step-up"] == "false"
    status, _, echo = http_json(
        open_gateway.port,
        "GET",
        "/api/positions",
        bearer("c-corp-us", amr=["mfa"], auth_time=int(time.time())),
    )
    assert echo["headers"]["x-step-up"] == "true"


def test_trace_context_is_continued_created_and_repaired(open_gateway: Gateway):
    headers = {**bearer("c-corp-us"), "traceparent": PARENT, "tracestate": "vendor=a,other=b"}
    _, _, echo = http_json(open_gateway.port, "GET", "/api/positions", headers)
    continued = TRACEPARENT.fullmatch(echo["headers"]["traceparent"])
    assert continued is not None
    assert continued.group(1) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert continued.group(2) != "00f067aa0ba902b7", "the gateway's hop has its own span"
    assert continued.group(3) == "01"
    assert echo["headers"]["tracestate"] == "vendor=a,other=b"

    _, _, echo = http_json(open_gateway.port, "GET", "/api/positions", bearer("c-corp-us"))
    created = TRACEPARENT.fullmatch(echo["headers"]["traceparent"])
    assert created is not None and created.group(1) != "0" * 32

    broken = {
        **bearer("c-corp-us"),
        "traceparent": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "tracestate": "vendor=a",
    }
    _, _, echo = http_json(open_gateway.port, "GET", "/api/positions", broken)
    repaired = TRACEPARENT.fullmatch(echo["headers"]["traceparent"])
    assert repaired is not None
    assert repaired.group(1) != "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "tracestate" not in echo["headers"], "a broken parent's state is not passed on"

    status, _, problem = http_json(
        open_gateway.port, "GET", "/api/positions", {"traceparent": PARENT}
    )
    assert status == 401
    assert problem["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
