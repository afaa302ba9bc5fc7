"""End-to-end load: cellgate against nginx and HAProxy 2.6 in front of the same two cells, with wrk.

Two nginx processes stand in for two cells (GET /api/... answers a small JSON body). In front of
them, one peer at a time, each with one worker / one thread (--workers N for N; not
cellgate-zone-2w, always two, nor the Redis peers, one per node):

  direct    wrk straight at cell bench-1: the ceiling, no proxy at all
  granian   granian serving an RSGI app that answers a constant JSON body from Python, with no
            auth and no forwarding: the ceiling of any gateway granian serves on this machine
  nginx     nginx as a plain reverse proxy (least_conn, pooled upstream connections, no auth)
  haproxy   HAProxy 2.6 verifying the HS256 JWT (alg, signature, iss, aud, exp, customer claim),
            a per-customer request-rate counter, leastconn, pooled server connections
  cellgate  `cellgate serve` on a generated configuration with every decision rule
            on (quota, risk factors, compliance rules, breakers; none refuses a bench request)
  cellgate-plain  the same without the rules (only with --only), to price them
  cellgate-hmac, cellgate-ed25519  the rules on and every forwarded request signed (RFC 9421)
            with that algorithm (only with --only), to price signing
  cellgate-failing  the rules on, the second cell replaced by one that answers 5% of requests
            with 503 (only with --only): retries should cost the client no error
  cellgate-audit-buffered, cellgate-audit-strict  the rules on and every request recorded in
            the audit trail (only with --only): to price the trail in each durability mode
  cellgate-zone  the rules on, revocations, quotas and cell load in the shared-memory zone
            even with one worker (only with --only): the zone's price against in-process state
  cellgate-zone-2w  the same with always two workers, whatever --workers says (only with
            --only): next to cellgate and cellgate-zone, one run shows one worker in-process,
            one with the zone and two sharing it
  cellgate-redis-exact, cellgate-redis-leased  two nodes (two `cellgate serve`, one worker
            each, on ports of their own) sharing one redis-server started for the peer, the
            rules on and every request's quota checked in Redis, one atomic script per request
            (exact) or per lease of 10 requests (leased) (only with --only): wrk drives both
            nodes at once, half the connections each; the price of state shared across nodes
  cellgate-mtls  the rules on, both cells replaced by nginx cells that speak only TLS and
            require a client certificate (a throwaway CA made for the run); the gateway's
            connections to them pooled as plain ones are (only with --only): the price of mTLS

wrk (-t1 -c64 by default, a short warm-up before each measured run) rotates 1,000 tokens for
1,000 customers and requests GET /api/accounts. Everything runs on 127.0.0.1; everything started is
stopped at the end, also on errors and Ctrl-C (a Redis peer's redis-server with the peer).

    python benches/e2e_load.py                                   # five peers, 10 s each
    python benches/e2e_load.py --only direct,nginx,haproxy --duration 3
    python benches/e2e_load.py --only haproxy,cellgate --loop rloop --json results.json
    python benches/e2e_load.py --only haproxy,cellgate --rounds 5   # medians of 5 interleaved runs
    python benches/e2e_load.py --workers 4 --cell-workers 4 --threads 4 --connections 256
    python benches/e2e_load.py --only cellgate,cellgate-zone,cellgate-zone-2w   # 1 worker, zone, 2
    python benches/e2e_load.py --only cellgate,cellgate-redis-exact,cellgate-redis-leased

On a shared, noisy machine use --rounds: each round measures every peer once, in turn, so drift
hits all peers alike; the table then shows each peer's medians over the rounds.

Needs nginx, haproxy (2.6+) and wrk (scripts/install-bench-deps.sh installs them on Debian), pyjwt,
for the cellgate peers an installed cellgate (or --cellgate-cmd), and for the Redis peers
redis-server (scripts/install-test-deps.sh installs it) and cellgate's Python package (for
cellgate.redis_server).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jwt

if TYPE_CHECKING:
    from cellgate.redis_server import RedisServer

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "e2e"
PEERS = (
    "direct",
    "granian",
    "nginx",
    "haproxy",
    "cellgate",
    "cellgate-plain",
    "cellgate-hmac",
    "cellgate-ed25519",
    "cellgate-failing",
    "cellgate-audit-buffered",
    "cellgate-audit-strict",
    "cellgate-mtls",
    "cellgate-zone",
    "cellgate-zone-2w",
    "cellgate-redis-exact",
    "cellgate-redis-leased",
)
#: Measured unless --only says otherwise.
DEFAULT_PEERS = ("direct", "granian", "nginx", "haproxy", "cellgate")
PEER_LABELS = {
    "direct": "nginx cell, direct (ceiling)",
    "granian": "granian, constant answer",
    "nginx": "nginx proxy (no auth)",
    "haproxy": "haproxy 2.6 + jwt_verify",
    "cellgate": "cellgate (every rule on)",
    "cellgate-plain": "cellgate (rules off)",
    "cellgate-hmac": "cellgate, cells signed hmac-sha256",
    "cellgate-ed25519": "cellgate, cells signed ed25519",
    "cellgate-failing": "cellgate, one cell failing 5% (503)",
    "cellgate-audit-buffered": "cellgate, audit trail buffered",
    "cellgate-audit-strict": "cellgate, audit trail strict",
    "cellgate-mtls": "cellgate, cells over mTLS",
    "cellgate-zone": "cellgate, state in the node's zone",
    "cellgate-zone-2w": "cellgate, zone, 2 workers",
    "cellgate-redis-exact": "cellgate 2 nodes, redis exact",
    "cellgate-redis-leased": "cellgate 2 nodes, redis leased",
}
#: Peers whose worker count is fixed, whatever --workers says (the Redis peers' is per node).
WORKERS = {"cellgate-zone-2w": 2, "cellgate-redis-exact": 1, "cellgate-redis-leased": 1}
#: The peers with their state in the node's shared-memory zone.
ZONE = ("cellgate-zone", "cellgate-zone-2w")
#: The two-node peers and how each counts quotas in the redis-server the nodes share.
REDIS_QUOTAS = {"cellgate-redis-exact": "exact", "cellgate-redis-leased": "leased"}
#: Requests one lease takes (`[state] redis_lease`, the leased peer).
REDIS_LEASE = 10
#: The Redis peers' nodes: each is a `cellgate serve` of its own, with its own port, home
#: directory and `[state] directory`.
REDIS_NODES = ("a", "b")
#: The audit durability of each audited peer.
AUDIT = {"cellgate-audit-buffered": "buffered", "cellgate-audit-strict": "strict"}
#: DER of an Ed25519 PKCS#8 private key up to its 32-byte seed (RFC 8410).
ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
#: The signing table of each signing peer's cells (bench keys, never used for anything else).
SIGNING = {
    "cellgate-hmac": (
        'signing = { keyid = "bench-hmac", alg = "hmac-sha256",'
        ' secret = "bench-signing-secret-bench-signing-secret" }'
    ),
    "cellgate-ed25519": (
        'signing = { keyid = "bench-ed25519", alg = "ed25519", jwk = { kty = "OKP",'
        ' crv = "Ed25519", x = "ZjFyixNxB9AuWY3I-AeF046FkpvVnv1S1VCHB4hKRJc",'
        ' d = "Cq1cZtqePSADRJ-WRi1utiWTJ4aqpaG505QS48stbXg" } }'
    ),
}
CUSTOMER_COUNT = 1000
ISSUER = "https://auth.bench"
AUDIENCE = "cellgate"
KEY_ID = "bench"
LEEWAY_S = 30
TOKEN_LIFETIME_S = 3600
#: Per customer per 10 s; far above what one customer can reach here, so HAProxy never throttles.
HAPROXY_RATE_LIMIT_PER_10S = 1_000_000
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class BenchError(RuntimeError):
    """A peer could not be started, checked or measured."""


@dataclass(frozen=True)
class Fixtures:
    """The customers' profiles and tokens written for one run."""

    secret: str
    profiles_path: Path
    tokens_path: Path
    tokens: list[str]


@dataclass
class Result:
    """One measured run of one peer."""

    peer: str
    label: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: The peer's processes' CPU time (user + system) over the measured run, per request (for
    #: the Redis peers, both nodes' together; not the redis-server's).
    cpu_us_per_request: float | None = None
    #: The Redis peers: the redis-server's own CPU time (user + system) over the measured run,
    #: per request, as its INFO cpu reports it.
    redis_cpu_us_per_request: float | None = None
    #: The Redis peers: quota scripts (EVALSHA and EVAL) Redis ran over the measured run, per
    #: request: 1 in exact mode, down to 1/lease in leased mode.
    redis_calls_per_request: float | None = None
    #: The Redis peers: the times a node took Redis to be down (its log's "is unreachable"
    #: lines) from its start to the end of the measured run.
    redis_outages: int | None = None
    #: wrk's numbers; with two nodes, combined (see combine_wrk) with each node's under "nodes".
    wrk: dict = field(default_factory=dict)


# -- fixtures ------------------------------------------------------------------------------------


def make_fixtures(workdir: Path, count: int = CUSTOMER_COUNT) -> Fixtures:
    """Writes `count` retail us-east profiles as JSON Lines and one HS256 token per customer."""
    # 48 ASCII bytes: above HS256's 32-byte minimum, and safe to quote in any of the configs.
    secret = secrets.token_hex(24)
    now = int(time.time())
    customer_ids = [f"c-{i:04d}" for i in range(count)]
    profiles_path = workdir / "customers.jsonl"
    profiles_path.write_text(
        "".join(
            json.dumps(
                {"customer_id": c, "tier": "retail", "region": "us-east", "risk": 0.1, "flags": []}
            )
            + "\n"
            for c in customer_ids
        ),
        encoding="utf-8",
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": KEY_ID}
    tokens = [
        jwt.encode(
            {"sub": cid, "iss": ISSUER, "aud": AUDIENCE, "exp": now + TOKEN_LIFETIME_S, "iat": now},
            secret,
            algorithm="HS256",
            headers=header,
        )
        for cid in customer_ids
    ]
    tokens_path = workdir / "tokens.txt"
    tokens_path.write_text("\n".join(tokens) + "\n", encoding="ascii")
    return Fixtures(secret, profiles_path, tokens_path, tokens)


def tampered(token: str) -> str:
    """The token with the first character of its signature changed (so the signature is wrong)."""
    head, payload, signature = token.split(".")
    first = "A" if signature[0] != "A" else "B"
    return f"{head}.{payload}.{first}{signature[1:]}"


#: Every decision rule on, none of which refuses a bench request: a quota as far above the load
#: as HAProxy's counter, risk factors that are scored but do not fire on loopback GETs, compliance
#: rules for flags the bench customers do not carry, and breakers.
RULES = """
[tiers.retail.rate_limit]
requests = 1000000
period_s = 10
burst = 1000000

[jwt.step_up]
amr = "mfa"
max_age_s = 900

[risk.thresholds]
medium = 0.5
high = 0.8
[[risk.high_risk_networks]]
name = "bench-bad"
weight = 0.3
cidrs = ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"]
[risk.unusual_hours]
start = "02:00"
end = "02:01"
weight = 0.1
[risk.money_paths]
weight = 0.2
patterns = ["/api/transfers*", "/api/*/withdraw*"]
methods = ["POST"]
[risk.suspicious_user_agents]
weight = 0.2
patterns = ["sqlmap", "nikto"]

[compliance]
PII_RESTRICTED = { certification = "SOC2" }
HIGH_RISK = { encryption = "standard" }

[breaker]
consecutive_failures = 5
wait_in_open_ms = 30000
successes_to_close = 3
"""


@dataclass(frozen=True)
class BenchTls:
    """The run's throwaway CA, the cells' server certificate and the gateway's client
    certificate (made with cellgate's demo issuer)."""

    ca_file: Path
    cell_cert_file: Path
    cell_key_file: Path
    gateway_cert_file: Path
    gateway_key_file: Path

    @classmethod
    def make(cls, directory: Path) -> BenchTls:
        from cellgate.demo.certs import demo_certificates

        made = demo_certificates(directory)
        return cls(*made.files())

    def client(self) -> ssl.SSLContext:
        """A client context that trusts the CA and presents the gateway's certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.gateway_cert_file), str(self.gateway_key_file))
        return context

    def cell_table(self) -> str:
        """A cell's `tls` line in the gateway's configuration."""
        return (
            f"tls = {{ ca_file = {json.dumps(str(self.ca_file))},"
            f" cert_file = {json.dumps(str(self.gateway_cert_file))},"
            f" key_file = {json.dumps(str(self.gateway_key_file))} }}\n"
        )


def cellgate_config(
    secret: str,
    cell_ports: list[int],
    profiles_path: Path,
    rules: bool = True,
    signing: str | None = None,
    tls: BenchTls | None = None,
) -> str:
    """The cellgate TOML configuration: both cells in tier retail / us-east, the bench key,
    (unless ``rules`` is off) every decision rule, with ``signing`` (a cell's signing table)
    every request signed, and with ``tls`` the cells reached over mTLS."""
    signed = f"signed = true\n{signing}\n" if signing else ""
    scheme = "https" if tls else "http"
    tls_line = tls.cell_table() if tls else ""

    cells = "".join(
        f"""
[[cells]]
id = "bench-{i}"
tier = "retail"
region = "us-east"
endpoint = "{scheme}://127.0.0.1:{port}"
{tls_line}capacity = 1000
certifications = ["SOC2"]
encryption = "standard"
{signed}"""
        for i, port in enumerate(cell_ports, start=1)
    )
    return f"""[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_s = {LEEWAY_S}
customer_claim = "sub"

[[jwt.keys]]
kid = "{KEY_ID}"
alg = "HS256"
secret = "{secret}"

[tiers.retail]
placement = "least_loaded"
{RULES if rules else ""}
{cells}
[health]
path = "/health"

[profiles]
source = {json.dumps(str(profiles_path.resolve()))}
"""


def render(template: str, dest: Path, **values: object) -> Path:
    """Writes the template from benches/e2e/ with every @NAME@ replaced by values[name]."""
    text = (TEMPLATES / template).read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"@{name.upper()}@", str(value))
    leftover = sorted(set(re.findall(r"@[A-Z0-9_]+@", text)))
    if leftover:
        raise BenchError(f"{template}: no value for {', '.join(leftover)}")
    dest.write_text(text, encoding="utf-8")
    return dest


# -- processes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pinning:
    """The CPUs the measured peer runs on, and those wrk and the cells run on (--pin)."""

    peer: frozenset[int]
    load: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Pinning:
        """`PEER:LOAD`, each a comma-separated list of CPU numbers, e.g. `0:1` or `0,1:2,3`."""
        try:
            peer, load = (
                frozenset(int(cpu) for cpu in part.split(",")) for part in text.split(":")
            )
        except ValueError:
            raise ValueError(f"--pin {text!r}: expected PEER:LOAD CPU lists, e.g. 0:1") from None
        usable = os.sched_getaffinity(0)
        if not peer or not load or peer & load or not (peer | load) <= usable:
            raise ValueError(
                f"--pin {text!r}: the two lists must be disjoint and within CPUs {sorted(usable)}"
            )
        return cls(peer, load)

    def confine(self, load: bool):
        """A preexec_fn that confines a child to the load's CPUs or the peer's."""
        cpus = self.load if load else self.peer
        return lambda: os.sched_setaffinity(0, cpus)


class Processes:
    """Children started in their own process groups, all stopped by stop_all()."""

    def __init__(self, pinning: Pinning | None = None) -> None:
        self.running: list[tuple[str, subprocess.Popen, Path]] = []
        self.pinning = pinning

    def start(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        cwd: Path | None = None,
        load: bool = False,
    ) -> subprocess.Popen:
        """Starts argv with stdout and stderr going to log_path; with pinning, on the load's CPUs
        (cells) or the peer's."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=self.pinning.confine(load) if self.pinning else None,
            )
        self.running.append((name, proc, log_path))
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """Sends SIGTERM to the child's process group, then SIGKILL if it has not exited in time."""
        self.running = [entry for entry in self.running if entry[1] is not proc]
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
        # Workers left behind by a master that died first share its group id.
        _signal_group(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stops every child still running, the newest first."""
        for _name, proc, _log in reversed(list(self.running)):
            self.stop(proc)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, indented, or a note that it is empty."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "    (empty log)"


def find_tool(name: str) -> str:
    """The path of an executable, also looking in the sbin directories a non-root PATH may lack."""
    path = shutil.which(name) or shutil.which(name, path=SBIN_PATH)
    if path is None:
        raise BenchError(f"{name} is not installed (scripts/install-bench-deps.sh installs it)")
    return path


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(
    port: int,
    path: str,
    token: str | None = None,
    timeout_s: float = 2.0,
    tls: ssl.SSLContext | None = None,
) -> int | None:
    """The status of GET path on 127.0.0.1:port (over TLS with `tls`), or None when nothing
    answers."""
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout_s, context=tls)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def wait_ready(
    name: str,
    proc: subprocess.Popen,
    log_path: Path,
    port: int,
    path: str,
    token: str | None,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Waits until GET path answers 200; raises with the log's tail on exit or timeout."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with status {proc.returncode}:\n{tail(log_path)}")
        status = http_status(port, path, token, tls=tls)
        if status == 200:
            return
        time.sleep(0.2)
    raise BenchError(
        f"{name} did not answer 200 on :{port}{path} within {READY_TIMEOUT_S}s (last: {status}):\n"
        + tail(log_path)
    )


def check_auth(name: str, port: int, fixtures: Fixtures) -> None:
    """Refuses to measure a gateway that accepts a forged or missing token or refuses a good one."""
    good, bad = fixtures.tokens[0], tampered(fixtures.tokens[0])
    checks = [
        ("a valid token", good, 200),
        ("a tampered signature", bad, 401),
        ("no token", None, 401),
    ]
    for what, token, expected in checks:
        status = http_status(port, "/api/accounts", token)
        if status != expected:
            raise BenchError(
                f"{name}: GET /api/accounts with {what}: {status}, expected {expected}"
            )
    print(f"  {name}: valid token 200, tampered signature 401, no token 401", flush=True)


# -- servers -------------------------------------------------------------------------------------


def nginx_user_line() -> str:
    """nginx run by root switches its workers to `nobody` unless told to stay root."""
    return "user root;" if os.geteuid() == 0 else ""


def start_nginx(
    procs: Processes, workdir: Path, name: str, template: str, **values: object
) -> tuple:
    """Starts nginx in the foreground with its own prefix directory; returns (process, log path)."""
    prefix = workdir / name
    prefix.mkdir(exist_ok=True)
    conf = render(
        template, prefix / "nginx.conf", dir=prefix, user_line=nginx_user_line(), **values
    )
    error_log = prefix / "error.log"
    argv = [find_tool("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(error_log)]
    proc = procs.start(name, argv, prefix / "stdout.log", load=name.startswith("cell-"))
    return proc, error_log


def start_cells(procs: Processes, workdir: Path, cell_ports: list[int], workers: int = 1) -> None:
    """Starts one nginx per cell (`workers` worker processes each) and waits until each answers
    GET /health."""
    for i, port in enumerate(cell_ports, start=1):
        cell_id = f"bench-{i}"
        proc, log = start_nginx(
            procs,
            workdir,
            f"cell-{i}",
            "cell.nginx.conf",
            port=port,
            cell_id=cell_id,
            workers=workers,
        )
        wait_ready(f"nginx cell {cell_id}", proc, log, port, "/health", None)


def start_mtls_cells(
    procs: Processes, workdir: Path, workers: int = 1
) -> tuple[BenchTls, list[int], list[subprocess.Popen]]:
    """Starts two nginx cells that speak only TLS and require a client certificate of a CA made
    for the run (in `workdir/tls`); waits until each answers GET /health over mTLS. Returns the
    certificates, the ports and the processes."""
    tls = BenchTls.make(workdir / "tls")
    ports, cells = [], []
    for i in (1, 2):
        port = free_port()
        cell, log = start_nginx(
            procs,
            workdir,
            f"cell-mtls-{i}",
            "mtls-cell.nginx.conf",
            port=port,
            cell_id=f"bench-{i}",
            workers=workers,
            cert_file=tls.cell_cert_file,
            key_file=tls.cell_key_file,
            ca_file=tls.ca_file,
        )
        cells.append(cell)
        wait_ready(f"nginx mTLS cell bench-{i}", cell, log, port, "/health", None, tls.client())
        ports.append(port)
    return tls, ports, cells


def raise_fd_limit() -> int:
    """Raises this process's open-file soft limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def haproxy_maxconn() -> int:
    """A global maxconn HAProxy can honour: it needs about two descriptors per connection."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(256, min(10_000, (soft - 100) // 2))


def start_haproxy(
    procs: Processes,
    workdir: Path,
    port: int,
    cell_ports: list[int],
    fixtures: Fixtures,
    workers: int = 1,
) -> tuple:
    """Validates the HAProxy configuration with `haproxy -c`, then runs it in the foreground."""
    haproxy = find_tool("haproxy")
    home = workdir / "haproxy"
    home.mkdir(exist_ok=True)
    cfg = render(
        "haproxy.cfg",
        home / "haproxy.cfg",
        port=port,
        cell1_port=cell_ports[0],
        cell2_port=cell_ports[1],
        secret=fixtures.secret,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway_s=LEEWAY_S,
        rate_limit_per_10s=HAPROXY_RATE_LIMIT_PER_10S,
        maxconn=haproxy_maxconn(),
        workers=workers,
    )
    check = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        raise BenchError(f"haproxy -c -f {cfg} failed:\n{check.stdout}{check.stderr}")
    log = home / "haproxy.log"
    return procs.start("haproxy", [haproxy, "-db", "-f", str(cfg)], log), log


def start_granian_floor(procs: Processes, workdir: Path, port: int, workers: int = 1) -> tuple:
    """Runs granian (cellgate's loop) on benches/bridge_app.py's constant answer."""
    home = workdir / "granian"
    home.mkdir(exist_ok=True)
    argv = [
        sys.executable,
        *("-m", "granian", "--interface", "rsgi", "--loop", "rloop", "--workers", str(workers)),
        *("--http", "1", "--no-ws", "--log-level", "warning"),
        *("--host", "127.0.0.1", "--port", str(port), "bridge_app:constant"),
    ]
    log = home / "granian.log"
    return procs.start("granian", argv, log, cwd=HERE), log


def start_cellgate(
    peer: str,
    procs: Processes,
    workdir: Path,
    port: int,
    cell_ports: list[int],
    fixtures: Fixtures,
    args: argparse.Namespace,
    tls: BenchTls | None = None,
    node: str = "",
    redis_url: str | None = None,
) -> tuple:
    """Writes the cellgate configuration and runs `cellgate serve` with --workers workers (or
    the peer's own number, WORKERS), the cells over mTLS with `tls`; for a Redis peer, node
    `node` of the peer, in a home directory of its own, sharing state through `redis_url`."""
    home = workdir / peer / node if node else workdir / peer
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "cellgate.toml"
    rules = peer != "cellgate-plain"
    config = cellgate_config(
        fixtures.secret, cell_ports, fixtures.profiles_path, rules, SIGNING.get(peer), tls
    )
    if peer in ZONE:
        config += '\n[state]\nzone = "on"\n'
    if peer in REDIS_QUOTAS:
        if redis_url is None or not node:
            raise BenchError(f"{peer}: a node of a Redis peer needs its name and the Redis URL")
        shutil.rmtree(home / f"state-{node}", ignore_errors=True)
        config += redis_state_table(peer, node, redis_url)
    if peer in AUDIT:
        der = ED25519_PKCS8_PREFIX + secrets.token_bytes(32)
        pem = base64.encodebytes(der).decode()
        (home / "audit.pem").write_text(
            f"-----BEGIN PRIVATE KEY-----\n{pem}-----END PRIVATE KEY-----\n"
        )
        shutil.rmtree(home / "audit", ignore_errors=True)
        config += (
            f'\n[audit]\ndirectory = "audit"\ndurability = "{AUDIT[peer]}"\n'
            'signing_key_file = "audit.pem"\n'
        )
    config_path.write_text(config, encoding="utf-8")
    argv = [
        *shlex.split(args.cellgate_cmd),
        *("serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)),
        *("--workers", str(WORKERS.get(peer, args.workers))),
    ]
    if args.loop:
        argv += ["--loop", args.loop]
    found = shutil.which(argv[0])
    if found is None:
        raise BenchError(f"no such command {argv[0]!r}: install cellgate or pass --cellgate-cmd")
    argv[0] = os.path.abspath(found)  # cellgate runs in its own directory
    print(f"  cellgate: {shlex.join(argv)}", flush=True)
    log = home / "cellgate.log"
    return procs.start(f"{peer}-{node}" if node else peer, argv, log, cwd=home), log


def redis_state_table(peer: str, node: str, redis_url: str) -> str:
    """The `[state]` table of node `node` of a Redis peer: no zone (one worker), a revocation
    log of its own, and the quotas (RULES' retail quota, far above the load, so it refuses
    nothing but checks every request) counted in the Redis at `redis_url`, the peer's way.

    `redis_unavailable = "refuse"`: a request whose quota could not be checked in Redis (no
    answer within `redis_timeout_ms`, and then every request for `redis_retry_ms`) is refused
    503 quota_unavailable and counted in the errors. The default, `refuse_money_paths`, would
    pass the bench's GETs on the node's own limits instead, unseen, and the peer would no longer
    measure what it is named after."""
    mode = REDIS_QUOTAS[peer]
    lease = f"redis_lease = {REDIS_LEASE}\n" if mode == "leased" else ""
    return (
        f'\n[state]\nzone = "off"\ndirectory = "state-{node}"\n'
        f'redis = {json.dumps(redis_url)}\nredis_quotas = "{mode}"\n{lease}'
        'redis_unavailable = "refuse"\n'
    )


# -- load ----------------------------------------------------------------------------------------


def wrk_argv(
    port: int, duration_s: int, args: argparse.Namespace, fixtures: Fixtures, connections: int
) -> list[str]:
    """wrk's command line for one run against 127.0.0.1:port with `connections` connections
    and --threads threads (no more threads than connections: wrk refuses that)."""
    return [
        find_tool("wrk"),
        f"-t{min(args.threads, connections)}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "-s",
        str(TEMPLATES / "tokens.lua"),
        f"http://127.0.0.1:{port}",
        "--",
        str(fixtures.tokens_path),
    ]


def run_wrk(port: int, duration_s: int, args: argparse.Namespace, fixtures: Fixtures) -> dict:
    """One wrk run against 127.0.0.1:port; returns the numbers its done() hook printed."""
    return run_wrks([port], duration_s, args, fixtures)[0]


def run_wrks(
    ports: list[int], duration_s: int, args: argparse.Namespace, fixtures: Fixtures
) -> list[dict]:
    """One wrk run against each of `ports`, all started together, with --connections split
    evenly between them (the same threads, duration, timeout and script otherwise); returns
    the numbers each one's done() hook printed, in the order of `ports`."""
    share, rest = divmod(args.connections, len(ports))
    limit_s = duration_s + 30
    started: list[subprocess.Popen] = []
    outputs: list[tuple[str, str]] = []
    try:
        for i, port in enumerate(ports):
            argv = wrk_argv(port, duration_s, args, fixtures, share + (i < rest))
            started.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    preexec_fn=args.pin.confine(load=True) if args.pin else None,
                )
            )
        deadline = time.monotonic() + limit_s
        for proc in started:
            try:
                outputs.append(proc.communicate(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise BenchError(f"wrk did not finish within {limit_s}s") from None
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    numbers = []
    for port, proc, (stdout, stderr) in zip(ports, started, outputs, strict=True):
        match = re.search(r"^E2E_RESULT (\{.*\})$", stdout, re.MULTILINE)
        if proc.returncode != 0 or match is None:
            raise BenchError(
                f"wrk against :{port} failed (status {proc.returncode}):\n{stdout}{stderr}"
            )
        numbers.append(json.loads(match.group(1)))
    return numbers


#: The counts of a wrk run, which the runs against several nodes add up.
WRK_COUNTS = (
    "requests",
    "bytes",
    "connect_errors",
    "read_errors",
    "write_errors",
    "timeouts",
    "status_errors",
)


def combine_wrk(runs: list[dict]) -> dict:
    """The numbers of wrk runs made together against the nodes of one peer, as one run's (one
    run: its numbers as they are). The counts are added up, the duration is the longest, the
    mean latency is weighted by requests and `nodes` holds each run's numbers.

    Each latency percentile (p50, p90, p99) and the maximum is the WORST of the runs': the runs'
    histograms cannot be merged from their percentiles, but the worst is an upper bound of the
    combined figure (no more than 1% of either run's requests took longer than its own p99, so
    no more than 1% of all of them took longer than the worse p99), and the two nodes carry
    about the same load, so it is close to it. The table's p50 and p99 for a two-node peer are
    these bounds."""
    if len(runs) == 1:
        return runs[0]
    combined: dict = {key: sum(run[key] for run in runs) for key in WRK_COUNTS}
    combined["duration_us"] = max(run["duration_us"] for run in runs)
    for key in ("p50_us", "p90_us", "p99_us", "max_us"):
        combined[key] = max(run[key] for run in runs)
    requests = combined["requests"]
    combined["mean_us"] = (
        sum(run["mean_us"] * run["requests"] for run in runs) / requests if requests else 0.0
    )
    combined["nodes"] = runs
    return combined


def group_cpu_s(pgid: int) -> float:
    """The CPU time (user + system, seconds) of the live processes in process group `pgid`."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: the fields follow its last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_stats(server: RedisServer) -> tuple[float, int]:
    """The redis-server's CPU time so far (user + system, seconds, from INFO cpu) and the
    scripts it has run (EVALSHA and EVAL calls, from INFO commandstats: cellgate's quota
    checks; redis-rs sends EVALSHA, and EVAL once a script is missing)."""
    from cellgate.redis_server import RedisError

    try:
        info = server.command("INFO", "cpu")
        stats = server.command("INFO", "commandstats")
    except (OSError, RedisError) as err:
        raise BenchError(f"redis-server on port {server.port}: INFO failed: {err}") from None
    if not isinstance(info, str) or not isinstance(stats, str):
        raise BenchError(f"redis-server on port {server.port}: INFO answered no text")
    cpu = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    try:
        cpu_s = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    except (KeyError, ValueError):
        raise BenchError(f"redis-server on port {server.port}: no CPU times in INFO cpu") from None
    calls = sum(
        int(match.group(1))
        for match in re.finditer(r"^cmdstat_eval(?:sha)?:calls=(\d+)", stats, re.MULTILINE)
    )
    return cpu_s, calls


def measure(
    peer: str,
    ports: list[int],
    args: argparse.Namespace,
    fixtures: Fixtures,
    pgids: tuple[int, ...] = (),
    redis: RedisServer | None = None,
) -> Result:
    """A warm-up run (unless --warmup 0), then the measured run, each against every one of
    `ports` at once (run_wrks, combine_wrk); with `pgids`, also the CPU time those process
    groups spent together per request, and with `redis` the redis-server's own CPU time and
    scripts per request (apart: not in the gateway's CPU per request)."""
    if args.warmup > 0:
        run_wrks(ports, args.warmup, args, fixtures)
    cpu_before = sum(group_cpu_s(pgid) for pgid in pgids)
    redis_before = redis_stats(redis) if redis is not None else None
    runs = run_wrks(ports, args.duration, args, fixtures)
    cpu_s = sum(group_cpu_s(pgid) for pgid in pgids) - cpu_before if pgids else None
    redis_after = redis_stats(redis) if redis is not None else None
    numbers = combine_wrk(runs)
    requests = numbers["requests"]
    socket_errors = sum(
        numbers[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    redis_cpu_us = redis_calls = None
    if redis_before is not None and redis_after is not None and requests:
        redis_cpu_us = (redis_after[0] - redis_before[0]) * 1e6 / requests
        redis_calls = (redis_after[1] - redis_before[1]) / requests
    return Result(
        peer=peer,
        label=PEER_LABELS[peer],
        # The nodes' rates added up (each wrk's over its own duration).
        requests_per_s=sum(run["requests"] / (run["duration_us"] / 1e6) for run in runs),
        p50_ms=numbers["p50_us"] / 1000,
        p99_ms=numbers["p99_us"] / 1000,
        errors=socket_errors + numbers["status_errors"],
        cpu_us_per_request=(cpu_s * 1e6 / requests if cpu_s is not None and requests else None),
        redis_cpu_us_per_request=redis_cpu_us,
        redis_calls_per_request=redis_calls,
        wrk=numbers,
    )


def run_peer(
    peer: str,
    procs: Processes,
    workdir: Path,
    cell_ports: list[int],
    fixtures: Fixtures,
    args: argparse.Namespace,
) -> Result:
    """Starts one peer in front of the cells, checks it, measures it and stops it."""
    if peer == "direct":
        cell = next(proc for name, proc, _log in procs.running if name == "cell-1")
        return measure(peer, [cell_ports[0]], args, fixtures, pgids=(cell.pid,))
    if peer in REDIS_QUOTAS:
        return run_redis_peer(peer, procs, workdir, cell_ports, fixtures, args)
    port = free_port()
    extra: list[subprocess.Popen] = []
    if peer == "nginx":
        proc, log = start_nginx(
            procs,
            workdir,
            "proxy",
            "proxy.nginx.conf",
            port=port,
            cell1_port=cell_ports[0],
            cell2_port=cell_ports[1],
            workers=args.workers,
        )
    elif peer == "haproxy":
        proc, log = start_haproxy(procs, workdir, port, cell_ports, fixtures, args.workers)
    elif peer == "granian":
        proc, log = start_granian_floor(procs, workdir, port, args.workers)
    elif peer == "cellgate-failing":
        # Stopped with the peer: a failing cell of its own for each run.
        failing_port = free_port()
        failing, failing_log = start_nginx(
            procs,
            workdir,
            "cell-failing",
            "failing-cell.nginx.conf",
            port=failing_port,
            cell_id="bench-failing",
            workers=args.cell_workers,
        )
        extra.append(failing)
        wait_ready("nginx cell bench-failing", failing, failing_log, failing_port, "/health", None)
        ports = [cell_ports[0], failing_port]
        proc, log = start_cellgate(peer, procs, workdir, port, ports, fixtures, args)
    elif peer == "cellgate-mtls":
        # Two mTLS cells of its own, stopped with the peer; the plain cells stay idle meanwhile.
        tls, ports, cells = start_mtls_cells(procs, workdir, args.cell_workers)
        extra.extend(cells)
        proc, log = start_cellgate(peer, procs, workdir, port, ports, fixtures, args, tls)
    else:
        proc, log = start_cellgate(peer, procs, workdir, port, cell_ports, fixtures, args)
    try:
        wait_ready(PEER_LABELS[peer], proc, log, port, "/api/accounts", fixtures.tokens[0])
        if peer not in ("nginx", "granian"):
            check_auth(peer, port, fixtures)
        return measure(peer, [port], args, fixtures, pgids=(proc.pid,))
    finally:
        procs.stop(proc)
        for cell in extra:
            procs.stop(cell)


def count_in_log(path: Path, text: str) -> int:
    """How many times `text` occurs in a log file (0 when there is none)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").count(text)
    except OSError:
        return 0


#: What a node logs when it takes Redis to be down (cellgate's state link).
REDIS_UNREACHABLE = "is unreachable"


def check_redis_quota(name: str, port: int, token: str, server: RedisServer) -> None:
    """Refuses to measure a node whose quota checks do not reach Redis: a request of a customer
    the node has not seen yet (so holds no lease for) must get 200 and run a quota script."""
    before = redis_stats(server)[1]
    status = http_status(port, "/api/accounts", token)
    scripts = redis_stats(server)[1] - before
    if status != 200 or scripts < 1:
        raise BenchError(
            f"{name}: GET /api/accounts for a customer it had not seen: {status} with"
            f" {scripts} quota script(s) run in Redis, expected 200 with at least one"
        )
    print(f"  {name}: quota checked in Redis ({scripts} script(s) for one request)", flush=True)


@dataclass(frozen=True)
class RedisNode:
    """One node of a Redis peer, started."""

    name: str
    proc: subprocess.Popen
    log: Path
    port: int
    #: The REDIS_UNREACHABLE lines its log held before it started (the log grows over rounds).
    unreachable_before: int


def run_redis_peer(
    peer: str,
    procs: Processes,
    workdir: Path,
    cell_ports: list[int],
    fixtures: Fixtures,
    args: argparse.Namespace,
) -> Result:
    """Starts a redis-server in the peer's work directory and the peer's two nodes
    (REDIS_NODES) in front of the cells, sharing it; checks both nodes, measures both at once
    and stops the nodes, then the redis-server, however it ends."""
    from cellgate.redis_server import RedisServer, RedisServerFailed, RedisServerMissing

    home = workdir / peer
    server = RedisServer(home / "redis")
    nodes: list[RedisNode] = []
    try:
        try:
            server.start()
        except (RedisServerMissing, RedisServerFailed) as err:
            raise BenchError(f"{peer}: {err}") from None
        print(f"  redis-server: {server.url} ({server.log_file})", flush=True)
        for name in REDIS_NODES:
            port = free_port()
            while port in cell_ports or any(port == node.port for node in nodes):
                port = free_port()
            logged = count_in_log(home / name / "cellgate.log", REDIS_UNREACHABLE)
            proc, log = start_cellgate(
                peer,
                procs,
                workdir,
                port,
                cell_ports,
                fixtures,
                args,
                node=name,
                redis_url=server.url,
            )
            nodes.append(RedisNode(f"{peer} node {name}", proc, log, port, logged))
        for i, node in enumerate(nodes):
            wait_ready(
                node.name, node.proc, node.log, node.port, "/api/accounts", fixtures.tokens[0]
            )
            check_auth(node.name, node.port, fixtures)
            # A customer of its own for each node, which wrk's warm-up has not sent yet.
            check_redis_quota(node.name, node.port, fixtures.tokens[-1 - i], server)
        result = measure(
            peer,
            [node.port for node in nodes],
            args,
            fixtures,
            pgids=tuple(node.proc.pid for node in nodes),
            redis=server,
        )
        result.redis_outages = sum(
            count_in_log(node.log, REDIS_UNREACHABLE) - node.unreachable_before for node in nodes
        )
        return result
    finally:
        try:
            for node in reversed(nodes):
                procs.stop(node.proc)
        finally:
            server.stop()


# -- report --------------------------------------------------------------------------------------


def versions(peers: list[str]) -> dict[str, str]:
    """The versions of the tools measured, as each reports itself."""

    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return ((done.stdout + done.stderr).strip().splitlines() or ["unknown"])[0]

    found = {
        "nginx": first_line([find_tool("nginx"), "-v"]),
        "wrk": first_line([find_tool("wrk"), "-v"]),
    }
    if "haproxy" in peers:
        found["haproxy"] = first_line([find_tool("haproxy"), "-v"])
    if any(peer.startswith("cellgate") for peer in peers):
        probe = (
            "import importlib.metadata as m\n"
            "try: print('cellgate', m.version('cellgate'))\n"
            "except m.PackageNotFoundError: print('cellgate: not installed')"
        )
        found["cellgate"] = first_line([sys.executable, "-c", probe])
    return found


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "platform": platform.platform()}


def median_of(runs: list[Result]) -> Result:
    """One peer's rounds as one row: the median of each figure, every error counted."""
    if len(runs) == 1:
        return runs[0]
    cpus = [r.cpu_us_per_request for r in runs if r.cpu_us_per_request is not None]

    def median_or_none(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    outages = [r.redis_outages for r in runs if r.redis_outages is not None]
    return Result(
        peer=runs[0].peer,
        label=runs[0].label,
        requests_per_s=statistics.median(r.requests_per_s for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        cpu_us_per_request=statistics.median(cpus) if cpus else None,
        redis_cpu_us_per_request=median_or_none([r.redis_cpu_us_per_request for r in runs]),
        redis_calls_per_request=median_or_none([r.redis_calls_per_request for r in runs]),
        redis_outages=sum(outages) if outages else None,
        wrk={"rounds_requests_per_s": [round(r.requests_per_s) for r in runs]},
    )


def print_table(results: list[Result], failed: dict[str, str]) -> None:
    """The results side by side, with ratios to HAProxy where HAProxy was measured."""
    reference = next((r for r in results if r.peer == "haproxy"), None)
    header = (
        f"{'peer':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'req/s vs haproxy':>16} {'p99 vs haproxy':>14} {'CPU us/req':>10}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in results:
        rps_ratio = f"{r.requests_per_s / reference.requests_per_s:.2f}" if reference else "-"
        p99_ratio = f"{r.p99_ms / reference.p99_ms:.2f}" if reference and reference.p99_ms else "-"
        cpu = f"{r.cpu_us_per_request:.1f}" if r.cpu_us_per_request is not None else "-"
        print(
            f"{r.label:<30} {r.requests_per_s:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
            f" {r.errors:>7d} {rps_ratio:>16} {p99_ratio:>14} {cpu:>10}"
        )
    for peer, reason in failed.items():
        print(f"{PEER_LABELS[peer]:<30} failed: {reason.splitlines()[0]}")
    for r in results:
        if "rounds_requests_per_s" in r.wrk:
            print(f"{r.label:<30} req/s by round: {r.wrk['rounds_requests_per_s']}")
    for r in results:
        if r.redis_calls_per_request is not None:
            print(f"{r.label:<30} {redis_note(r)}")
    if any(r.peer in REDIS_QUOTAS for r in results):
        print(
            "(two-node rows: req/s and errors summed over both nodes, p50 and p99 the worse"
            " node's, CPU us/req both nodes' processes without the redis-server's)"
        )


def redis_note(r: Result) -> str:
    """A Redis peer's redis-server figures, as one line."""
    cpu = r.redis_cpu_us_per_request
    return (
        f"redis-server: {f'{cpu:.1f}' if cpu is not None else '-'} us CPU per request"
        f" (not in CPU us/req), {r.redis_calls_per_request:.2f} quota scripts per request,"
        f" {r.redis_outages if r.redis_outages is not None else '-'} times taken to be down"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_PEERS),
        help=f"comma-separated peers to measure, of {','.join(PEERS)}"
        f" (default: {','.join(DEFAULT_PEERS)})",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per measured run (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of warm-up before each measured run, 0 for none (default: %(default)s)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=64,
        help="wrk connections; the Redis peers' split between their two nodes, each driven by"
        " a wrk of its own with --threads threads (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default: %(default)s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes or threads of every peer: cellgate's and granian's --workers,"
        " nginx's worker_processes, HAProxy's nbthread; not cellgate-zone-2w's (always 2) nor"
        " the Redis peers' (1 per node) (default: %(default)s)",
    )
    parser.add_argument(
        "--cell-workers",
        type=int,
        default=1,
        help="nginx worker processes of each cell (default: %(default)s)",
    )
    parser.add_argument(
        "--cellgate-cmd",
        default="cellgate",
        help="command that runs cellgate; `serve --config ...` is appended (default: %(default)s)",
    )
    parser.add_argument(
        "--loop", help="event loop for `cellgate serve --loop` (default: cellgate's)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every peer this many times, interleaved, and report medians"
        " (default: %(default)s)",
    )
    parser.add_argument(
        "--pin",
        metavar="PEER:LOAD",
        help="run the measured peer on the CPUs before the colon and wrk and the cells on those"
        " after it, e.g. 0:1 (default: no pinning, everything shares every CPU)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--keep-tmp",
        action="store_true",
        help="keep the temporary directory (configurations, logs)",
    )
    args = parser.parse_args(argv)
    args.peers = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown or not args.peers:
        given = ", ".join(unknown) or "(none given)"
        parser.error(f"--only: unknown peer(s) {given}; choose from {', '.join(PEERS)}")
    args.peers = [p for p in PEERS if p in args.peers]
    try:
        args.pin = Pinning.parse(args.pin) if args.pin else None
    except ValueError as err:
        parser.error(str(err))
    if not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    if not 1 <= args.rounds <= 50:
        parser.error("--rounds must be between 1 and 50")
    if args.workers < 1 or args.cell_workers < 1:
        parser.error("--workers and --cell-workers must be >= 1")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be between 0 and 60 seconds")
    if args.threads < 1 or args.connections < args.threads:
        parser.error("--threads must be at least 1 and --connections at least --threads")
    if args.connections < len(REDIS_NODES) and any(p in REDIS_QUOTAS for p in args.peers):
        parser.error(f"--connections must be at least {len(REDIS_NODES)} for the Redis peers")
    return args


def _terminate(signum: int, _frame: object) -> None:
    print(f"\nstopped by signal {signum}", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    raise_fd_limit()
    procs = Processes(args.pin)
    workdir = Path(tempfile.mkdtemp(prefix="cellgate-e2e-"))
    results: list[Result] = []
    failed: dict[str, str] = {}
    try:
        for tool in ("nginx", "wrk") + (("haproxy",) if "haproxy" in args.peers else ()):
            find_tool(tool)
        fixtures = make_fixtures(workdir)
        cell_ports = [free_port(), free_port()]
        while cell_ports[1] == cell_ports[0]:
            cell_ports[1] = free_port()
        print(
            f"{os.cpu_count()} cpus; wrk -t{args.threads} -c{args.connections} -d{args.duration}s"
            f" (warm-up {args.warmup}s); {CUSTOMER_COUNT} customers and tokens;"
            f" cells on :{cell_ports[0]} and :{cell_ports[1]} ({args.cell_workers} worker(s) each);"
            f" {args.workers} worker(s) or thread(s) per peer"
            + (
                f"; peer on CPUs {sorted(args.pin.peer)}, wrk and cells on {sorted(args.pin.load)}"
                if args.pin
                else ""
            ),
            flush=True,
        )
        start_cells(procs, workdir, cell_ports, args.cell_workers)
        rounds: dict[str, list[Result]] = {peer: [] for peer in args.peers}
        for round_no in range(1, args.rounds + 1):
            for peer in [p for p in args.peers if p not in failed]:
                of_rounds = f" (round {round_no}/{args.rounds})" if args.rounds > 1 else ""
                print(f"{PEER_LABELS[peer]}{of_rounds} ...", flush=True)
                try:
                    result = run_peer(peer, procs, workdir, cell_ports, fixtures, args)
                except BenchError as err:
                    print(f"  failed: {err}", file=sys.stderr, flush=True)
                    failed[peer] = str(err)
                    continue
                rounds[peer].append(result)
                print(
                    f"  {result.requests_per_s:.0f} req/s, p50 {result.p50_ms:.2f} ms,"
                    f" p99 {result.p99_ms:.2f} ms, {result.errors} errors"
                    + (
                        f", {result.cpu_us_per_request:.1f} us CPU per request"
                        if result.cpu_us_per_request is not None
                        else ""
                    )
                    + (
                        f"; {redis_note(result)}"
                        if result.redis_calls_per_request is not None
                        else ""
                    ),
                    flush=True,
                )
        results = [median_of(runs) for runs in rounds.values() if runs]
        print_table(results, failed)
        if args.json:
            report = {
                "machine": machine(),
                "versions": versions(args.peers),
                "settings": {
                    "threads": args.threads,
                    "connections": args.connections,
                    "duration_s": args.duration,
                    "warmup_s": args.warmup,
                    "customers": CUSTOMER_COUNT,
                    "loop": args.loop,
                    "workers": args.workers,
                    "cell_workers": args.cell_workers,
                    "pin": (
                        {"peer": sorted(args.pin.peer), "load": sorted(args.pin.load)}
                        if args.pin
                        else None
                    ),
                },
                "rounds": args.rounds,
                "results": [asdict(r) for r in results],
                "runs": {peer: [asdict(r) for r in runs] for peer, runs in rounds.items()},
                "failed": failed,
            }
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            print(f"\nwrote {args.json}")
        return 1 if failed else 0
    except BenchError as err:
        print(f"e2e_load: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_tmp:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
