"""mTLS to cells, end to end: the demo's hnw-us-east-1 listens with TLS (granian) and requires a
client certificate issued by the demo's throwaway CA. The gateway reaches it (forwards and health
probes); a client without that certificate is refused in the handshake; a gateway that trusts
another CA refuses the cell, says so in its problem answer, and counts it against the cell's
breaker; every bad `[cells.tls]` input is a configuration error naming its field, all at once."""

from __future__ import annotations

import re
import socket
import ssl
import time
from pathlib import Path

import pytest
from cellgate.config import ConfigError, build_router, load_config
from cellgate.demo.certs import (
    DemoCertificates,
    demo_certificates,
    issue_ca,
    issue_leaf,
    write_key,
    write_pem,
)
from cellgate.demo.launch import demo_tls, demo_token
from harness import Gateway, demo_variant, http_json, start_gateway, tls_client, to_demo_cell

MTLS_CELL = "hnw-us-east-1"
HNW_US = {"Authorization": f"Bearer {demo_token('c-hnw-us')}"}


def test_the_gateway_reaches_the_mtls_cell(gateway: Gateway):
    status, _, echo = http_json(gateway.port, "GET", "/api/accounts?page=1", HNW_US)
    assert status == 200, echo
    assert echo["cell"] == MTLS_CELL
    assert echo["raw_path"] == "/api/accounts" and echo["query"] == "page=1"
    # Its health probes go over mTLS too: with fall = 2 at 100 ms a failing probe would long
    # have taken it out.
    time.sleep(0.5)
    (hnw,) = [cell for cell in gateway.cells() if cell["id"] == MTLS_CELL]
    assert hnw["healthy"] and hnw["breaker"] == "closed", hnw


def test_the_mtls_cell_answers_a_client_with_the_certificate(demo_cells_running):
    status, _, payload = to_demo_cell(demo_cells_running, MTLS_CELL, "GET", "/health")
    assert (status, payload["status"]) == (200, "ok")


def _handshake_refused(port: int, context: ssl.SSLContext) -> str:
    """What the cell's refusal looks like to a TLS client: the error of the handshake, or of
    the first read (TLS 1.3 clients learn of a refused certificate only then)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /health HTTP/1.1\r\nHost: cell\r\n\r\n")
                answer = tls.recv(100)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as refused:
            return str(refused)
    raise AssertionError(f"the cell answered a client without a certificate: {answer!r}")


def test_the_mtls_cell_refuses_a_client_without_the_certificate(demo_cells_running, tmp_path):
    port = demo_cells_running.ports[MTLS_CELL]
    tls = demo_tls(demo_cells_running.directory)
    refused = _handshake_refused(port, tls_client(tls.ca_file))
    assert "CERTIFICATE_REQUIRED" in refused.upper() or "reset" in refused.lower(), refused
    # A certificate from another CA is no better than none.
    stranger = issue_ca("not the demo CA")
    cert, key = issue_leaf(stranger, "impostor", server=False)
    write_pem(tmp_path / "impostor.pem", cert)
    write_key(tmp_path / "impostor.key", key)
    impostor = tls_client(tls.ca_file, tmp_path / "impostor.pem", tmp_path / "impostor.key")
    _handshake_refused(port, impostor)
    # Plain HTTP gets no HTTP answer at all.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(b"GET /health HTTP/1.1\r\nHost: cell\r\n\r\n")
        try:
            answer = plain.recv(100)
        except ConnectionResetError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer


@pytest.fixture(scope="module")
def wrong_ca_gateway(demo_config: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo gateway, except that it trusts another CA for hnw-us-east-1, retries nothing
    (so its refusal reaches the client) and checks health every 4 s (so that the cell is still
    eligible, its probes failing, while the first requests are sent)."""
    directory = tmp_path_factory.mktemp("wrong-ca")
    write_pem(directory / "other-ca.pem", issue_ca("another CA").certificate)
    text = demo_config.read_text().replace('ca_file = "tls/ca.pem"', 'ca_file = "other-ca.pem"')
    text = text.replace("interval_ms = 100", "interval_ms = 4000").replace(
        "timeout_ms = 100", "timeout_ms = 500"
    )
    text += "\n[forward]\nretry = { retries = 0 }\n"
    gateway = start_gateway(demo_variant(demo_config, directory, text))
    yield gateway
    gateway.stop()


def test_a_gateway_trusting_another_ca_refuses_the_cell_and_counts_it(wrong_ca_gateway: Gateway):
    problems = [http_json(wrong_ca_gateway.port, "GET", "/api/accounts", HNW_US) for _ in range(5)]
    for status, headers, problem in problems:
        assert status == 502, problem
        assert headers["content-type"] == "application/problem+json"
        assert problem["reason"] == "cell_unreachable"
        assert problem["detail"].startswith(f"{MTLS_CELL}: TLS failed: invalid peer certificate")
    # Five failures in a row open the demo's breakers; the probes fail the same way.
    (hnw,) = [cell for cell in wrong_ca_gateway.cells() if cell["id"] == MTLS_CELL]
    assert hnw["breaker"] == "open", hnw
    deadline = time.monotonic() + 15
    while hnw["healthy"] and time.monotonic() < deadline:
        time.sleep(0.2)
        (hnw,) = [cell for cell in wrong_ca_gateway.cells() if cell["id"] == MTLS_CELL]
    assert not hnw["healthy"], "the health probes trust the same CA as the forwards"


# ---------------------------------------------------------------- configuration errors


def _tls_table(**fields: str) -> str:
    return "tls = { " + ", ".join(f'{name} = "{value}"' for name, value in fields.items()) + " }"


def _with_cells(text: str, endpoints: dict[str, str]) -> str:
    """The demo configuration with each named cell's endpoint line replaced (and the mTLS cell's
    own tls table dropped, so that only what the case writes is there)."""
    text = re.sub(r"^tls = .*$\n", "", text, flags=re.MULTILINE)
    for cell_id, lines in endpoints.items():
        block = re.compile(rf'(id = "{cell_id}"\n(?:.*\n)*?)endpoint = .*\n')
        text = block.sub(lambda m, lines=lines: m[1] + lines + "\n", text, count=1)
    return text


def test_every_bad_tls_input_is_an_error_naming_its_field(demo_config: Path, tmp_path: Path):
    tls = demo_certificates(tmp_path / "tls")
    write_key(tmp_path / "stranger.key", issue_leaf(issue_ca("x"), "x", server=False)[1])
    (tmp_path / "empty.pem").write_text("nothing here\n")
    https = 'endpoint = "https://127.0.0.1:9443"\n'
    ok = {"ca_file": "tls/ca.pem", "cert_file": "tls/gateway.pem", "key_file": "tls/gateway.key"}
    cases = {
        "retail-us-east-1": 'endpoint = "http://127.0.0.1:9101"\n' + _tls_table(**ok),
        "retail-us-east-2": https.strip(),
        "corp-us-east-1": https + _tls_table(**ok, server_name="not a name!"),
        "hnw-us-east-1": https + _tls_table(**{**ok, "key_file": "stranger.key"}),
        "retail-eu-west-1": https
        + _tls_table(**{**ok, "ca_file": "gone.pem", "cert_file": "empty.pem"}),
        "corp-eu-west-1": https + _tls_table(**ok, min_version="1.1"),
        "hnw-ap-southeast-1": https + _tls_table(ca_file="empty.pem", sni="x"),
    }
    path = tmp_path / "cellgate.toml"
    path.write_text(_with_cells(demo_config.read_text(), cases))
    (tmp_path / "customers.jsonl").write_text((demo_config.parent / "customers.jsonl").read_text())
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    tls_errors = sorted(e for e in refused.value.errors if ".tls" in e or "].tls" in e)
    assert tls_errors == sorted(
        [
            "cells[0].tls: given, but the endpoint is http://",
            "cells[1].tls: required for an https:// endpoint (ca_file at least)",
            'cells[2].tls.server_name: "not a name!" is not a DNS name or an IP address',
            "cells[3].tls.key_file: does not match the certificate of cert_file",
            f"cells[4].tls.ca_file: cannot read '{tmp_path}/gone.pem': No such file or directory",
            "cells[5].tls.min_version: must be one of '1.2', '1.3', got '1.1'",
            "cells[6].tls.sni: unknown field (known: ca_file, cert_file, key_file, min_version,"
            " server_name)",
        ]
    ), refused.value.errors
    assert tls.ca_file.is_file()


def test_a_ca_file_without_a_certificate_and_a_certificate_file_without_one_are_named(
    demo_config: Path, tmp_path: Path
):
    demo_certificates(tmp_path / "tls")
    (tmp_path / "empty.pem").write_text("nothing here\n")
    table = _tls_table(ca_file="empty.pem", cert_file="tls/gateway.key", key_file="tls/gateway.key")
    text = _with_cells(
        demo_config.read_text(), {MTLS_CELL: f'endpoint = "https://localhost:9443"\n{table}'}
    )
    path = demo_variant(demo_config, tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.errors == [
        "cells[3].tls.ca_file: holds no PEM CERTIFICATE",
        "cells[3].tls.cert_file: holds no PEM CERTIFICATE",
    ]


def test_a_valid_tls_table_compiles_into_the_core(demo_config: Path):
    config = load_config(demo_config)
    (index,) = [i for i, cell in enumerate(config.cells) if cell.id == MTLS_CELL]
    compiled = config.compiled_tls[index]
    assert compiled["ca_pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert compiled["key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert compiled["min_version"] == "1.2" and compiled["server_name"] is None
    assert all(tls is None for i, tls in enumerate(config.compiled_tls) if i != index)
    assert build_router(config).profile_count > 0


# ---------------------------------------------------------------- the demo's certificates


def test_the_demo_certificates_are_made_once_and_reused(tmp_path: Path):
    first = demo_certificates(tmp_path / "tls")
    made = {path: path.read_bytes() for path in first.files()}
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == sorted(
        ["ca.pem", "cell.pem", "cell.key", "gateway.pem", "gateway.key"]
    )
    assert (tmp_path / "tls").stat().st_mode & 0o077 == 0
    assert all(first_key.stat().st_mode & 0o077 == 0 for first_key in (first.cell_key_file,))
    again = demo_certificates(tmp_path / "tls")
    assert {path: path.read_bytes() for path in again.files()} == made


def test_a_broken_or_mismatched_set_is_made_again_whole(tmp_path: Path):
    first = demo_certificates(tmp_path / "tls")
    ca_before = first.ca_file.read_bytes()
    first.gateway_key_file.unlink()
    second = demo_certificates(tmp_path / "tls")
    assert second.ca_file.read_bytes() != ca_before, "a new CA, and every leaf signed by it"
    assert second.usable()
    # A CA that did not sign the leaves (another run's) is not kept either.
    write_pem(second.ca_file, issue_ca("someone else").certificate)
    assert not DemoCertificates(tmp_path / "tls").usable()
    assert demo_certificates(tmp_path / "tls").usable()


def test_near_expiry_certificates_are_renewed(tmp_path: Path):
    short = demo_certificates(tmp_path / "tls", valid_days=1)
    assert not short.usable(), "less than a day left"
    assert demo_certificates(tmp_path / "tls").usable()
