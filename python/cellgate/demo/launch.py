"""Starting the embedded default: demo cells as real processes, their configuration, demo tokens,
and the throwaway certificates of the cells served over mTLS, all in the demo's own directory."""

from __future__ import annotations

import base64
import functools
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jwt
import orjson

from cellgate.demo.certs import DemoCertificates, demo_certificates
from cellgate.keys import b64url

__all__ = [
    "MTLS_CELLS",
    "DemoCells",
    "add_demo_audit",
    "demo_tls",
    "demo_token",
    "demo_verify_keys",
    "render_demo_config",
    "topology_text",
]

#: The demo cells served over mTLS: TLS, and a client certificate they require of the gateway.
MTLS_CELLS = frozenset({"hnw-us-east-1"})

#: Where, in the demo's directory, the throwaway CA and certificates are kept.
TLS_DIR = "tls"

_ENDPOINT_LINE = re.compile(r'^endpoint = "http://127\.0\.0\.1:(\d+)"$', re.MULTILINE)


@functools.cache
def topology_text() -> str:
    """The demo topology's TOML as shipped."""
    return resources.files("cellgate.demo").joinpath("topology.toml").read_text(encoding="utf-8")


def demo_cells() -> list[str]:
    """The demo cell ids, in topology order."""
    return [cell["id"] for cell in _topology()["cells"]]


def demo_verify_keys() -> dict[str, dict]:
    """The key each signed demo cell verifies the gateway's signatures with: the public half of
    the cell's signing key (an Ed25519 JWK without ``d``, or the HMAC secret)."""
    keys = {}
    for cell in _topology()["cells"]:
        signing = cell.get("signing")
        if not cell.get("signed") or signing is None:
            continue
        key = {"keyid": signing["keyid"], "alg": signing["alg"]}
        if "jwk" in signing:
            key["jwk"] = {m: signing["jwk"][m] for m in ("kty", "crv", "x")}
        else:
            key["secret_b64"] = b64url(signing["secret"].encode())
        keys[cell["id"]] = key
    return keys


#: DER of an Ed25519 PKCS#8 private key (RFC 8410) up to its 32-byte seed.
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


def add_demo_audit(config: Path) -> Path:
    """Gives the demo configuration at ``config`` a buffered audit trail beside it, signed with a
    demo key made there on first use (never used outside that directory); returns the trail's
    directory."""
    key = config.parent / "audit-signing.pem"
    if not key.exists():
        der = _ED25519_PKCS8_PREFIX + secrets.token_bytes(32)
        body = base64.b64encode(der).decode()
        key.write_text(f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
        key.chmod(0o600)
    with config.open("a", encoding="utf-8") as out:
        out.write(
            '\n[audit]\ndirectory = "audit"\ndurability = "buffered"\n'
            'signing_key_file = "audit-signing.pem"\n'
        )
    return config.parent / "audit"


def add_demo_redis(config: Path, url: str) -> None:
    """Shares the demo configuration's state at ``config`` through the Redis at ``url``."""
    with config.open("a", encoding="utf-8") as out:
        out.write(f'\n[state]\nredis = "{url}"\n')


def demo_tls(directory: Path) -> DemoCertificates:
    """The demo's throwaway certificates in ``directory`` (under ``tls/``): made on the first
    start, the same files on later ones."""
    return demo_certificates(Path(directory) / TLS_DIR)


def _endpoint_lines(cell_id: str, port: int) -> str:
    """A demo cell's endpoint at ``port``; an mTLS cell's is https:// with its ``tls`` table."""
    if cell_id not in MTLS_CELLS:
        return f'endpoint = "http://127.0.0.1:{port}"'
    return (
        f'endpoint = "https://127.0.0.1:{port}"\n'
        f'tls = {{ ca_file = "{TLS_DIR}/ca.pem", cert_file = "{TLS_DIR}/gateway.pem",'
        f' key_file = "{TLS_DIR}/gateway.key" }}'
    )


def render_demo_config(directory: Path, ports: dict[str, int]) -> Path:
    """Writes the demo configuration and customers into ``directory``, cells at ``ports``, the
    mTLS cells over https:// with the demo's certificates (made there on first use)."""
    ids = iter(demo_cells())
    text = _ENDPOINT_LINE.sub(
        lambda m: _endpoint_lines((i := next(ids)), ports[i]), topology_text()
    )
    directory.mkdir(parents=True, exist_ok=True)
    if MTLS_CELLS & ports.keys():
        demo_tls(directory)
    config = directory / "cellgate.toml"
    config.write_text(text, encoding="utf-8")
    customers = resources.files("cellgate.demo").joinpath("customers.jsonl")
    with resources.as_file(customers) as source:
        shutil.copyfile(source, directory / "customers.jsonl")
    return config


def demo_customers() -> list[dict]:
    """The demo customers' profiles."""
    text = resources.files("cellgate.demo").joinpath("customers.jsonl").read_text(encoding="utf-8")
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@functools.cache
def _topology() -> dict:
    return tomllib.loads(topology_text())


def demo_token(customer_id: str, ttl_s: int = 12 * 3600, **claims) -> str:
    """A token for ``customer_id`` signed with the demo key (demo use only)."""
    config = _topology()
    key = config["jwt"]["keys"][0]
    now = int(time.time())
    payload = {
        "sub": customer_id,
        "iss": config["jwt"]["issuer"],
        "aud": config["jwt"]["audience"],
        "iat": now,
        "exp": now + ttl_s,
        **claims,
    }
    return jwt.encode(payload, key["secret"], algorithm=key["alg"], headers={"kid": key["kid"]})


def demo_admin_token(ttl_s: int = 12 * 3600) -> str:
    """An admin API token signed with the demo admin secret (demo use only)."""
    secret = _topology()["admin"]["secret"]
    now = int(time.time())
    return jwt.encode(
        {"sub": "demo-operator", "aud": "cellgate-admin", "iat": now, "exp": now + ttl_s}, secret
    )


@dataclass
class DemoCells:
    """Demo cell processes on loopback, one per cell id, started and stopped together; the mTLS
    cells take their certificates from the demo's ``directory``."""

    ports: dict[str, int]
    directory: Path
    host: str = "127.0.0.1"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def _tls_arguments(self, cell_id: str) -> list[str]:
        if cell_id not in MTLS_CELLS:
            return []
        tls = demo_tls(self.directory)
        return [
            *("--tls-cert", str(tls.cell_cert_file), "--tls-key", str(tls.cell_key_file)),
            *("--tls-client-ca", str(tls.ca_file)),
        ]

    def start(self, timeout_s: float = 15.0) -> None:
        """Starts every cell and waits until each says it is listening."""
        verify_keys = demo_verify_keys()
        for cell_id, port in self.ports.items():
            key = verify_keys.get(cell_id)
            signed = [] if key is None else ["--verify-key", orjson.dumps(key).decode()]
            self.processes[cell_id] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cellgate.demo.cell",
                    "--id",
                    cell_id,
                    "--host",
                    self.host,
                    "--port",
                    str(port),
                    *signed,
                    *self._tls_arguments(cell_id),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        deadline = time.monotonic() + timeout_s
        for cell_id, process in self.processes.items():
            assert process.stdout is not None
            line = process.stdout.readline()
            if "listening" not in line or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"demo cell {cell_id} did not start (exit code {process.poll()})"
                )

    def stop(self) -> None:
        """Stops every cell."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout is not None:
                process.stdout.close()
        self.processes.clear()
