"""Configuration: the TOML an operator writes, validated whole and compiled into the core.

``load_config(path)`` reads and validates a file, raising :class:`ConfigError` with every problem
at once, each naming its dotted path. ``build_router(config)`` compiles a valid configuration and
its profile source into a :class:`cellgate._core.Router`.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import msgspec

from cellgate import _core
from cellgate._validate import field_value, validate
from cellgate.cell_tls import read_pem, tls_settings
from cellgate.keys import Algorithm, jwks_keys, key_settings, secret
from cellgate.signing_keys import pem_private_key, signer_settings
from cellgate.timezones import compile_zones

__all__ = [
    "AdminConfig",
    "BreakerConfig",
    "CellConfig",
    "Config",
    "ConfigError",
    "ForwardConfig",
    "HealthConfig",
    "JwtConfig",
    "JwtKeyConfig",
    "PathsConfig",
    "ProfilesConfig",
    "RateLimitConfig",
    "RequirementConfig",
    "RetryConfig",
    "RiskConfig",
    "ServerConfig",
    "SigningConfig",
    "StepUpConfig",
    "TierConfig",
    "TlsConfig",
    "build_router",
    "compile_settings",
    "config_from_table",
    "config_warnings",
    "load_config",
    "parse_config",
]

Positive = Annotated[int, msgspec.Meta(gt=0)]
Weight = Annotated[float, msgspec.Meta(ge=0, le=1)]
Percent = Annotated[int, msgspec.Meta(ge=1, le=100)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(min_length=1)]


class ConfigError(ValueError):
    """A configuration was refused; ``errors`` lists every problem as ``path: message``."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}{len(self.errors)} configuration error(s):\n  " + "\n  ".join(self.errors)
        )


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class JwtKeyConfig(_Section):
    """A token verification key bound to one algorithm: for HS* a secret (inline, from an
    environment variable, or base64url), for the others a public key (PEM file, PEM text, JWK)."""

    kid: Name
    alg: Algorithm = "HS256"
    secret: str | None = None
    secret_env: Name | None = None
    secret_b64: Name | None = None
    public_key_file: Name | None = None
    public_key_pem: Name | None = None
    jwk: dict[str, Any] | None = None


class StepUpConfig(_Section):
    """What proves step-up authentication; every part given must hold. With none given, nothing
    proves it (a request that needs step-up is always refused)."""

    amr: Name | None = None
    acr: list[Name] = []
    max_age_s: Positive | None = None


class JwtConfig(_Section):
    """How bearer tokens are verified."""

    keys: list[JwtKeyConfig] = []
    jwks_file: Name | None = None
    issuer: str | None = None
    audience: str | None = None
    #: The JOSE header ``typ`` every token must give (RFC 8725 section 3.11), e.g. ``at+jwt``
    #: (RFC 9068); compared as a media type. None: not checked.
    typ: Name | None = None
    leeway_s: NonNegative = 30
    customer_claim: Name = "sub"
    require_exp: bool = True
    cache_size: NonNegative = 100_000
    cache_ttl_s: Positive = 300
    step_up: StepUpConfig = StepUpConfig()


class RateLimitConfig(_Section):
    """A tier's per-customer quota (GCRA): ``requests`` per ``period_s``, at most ``burst`` at
    once. Over it: 429 with Retry-After; every answer carries the RateLimit fields."""

    requests: Positive
    period_s: Positive
    burst: Positive = 1


class TierConfig(_Section):
    """Per-tier policy: placement (least loaded, or sticky by rendezvous hashing weighted by
    capacity) and the per-customer quota."""

    placement: Literal["least_loaded", "sticky"] = "least_loaded"
    rate_limit: RateLimitConfig | None = None


class NetworkListConfig(_Section):
    """A named list of high-risk networks (CIDRs or addresses) and the weight it adds."""

    name: Name
    weight: Weight
    cidrs: list[Name]


class UnusualHoursConfig(_Section):
    """A local time-of-day window (``"23:00"`` to ``"06:00"`` wraps midnight), in the customer's
    time zone (UTC without one), and the weight it adds."""

    start: Name
    end: Name
    weight: Weight


class MoneyPathsConfig(_Section):
    """Money-moving path patterns (``*`` matches anything) and the methods they apply to."""

    weight: Weight
    patterns: list[Name]
    methods: list[Name] | None = None


class UserAgentsConfig(_Section):
    """Suspicious User-Agent substrings (case-insensitive), and the weight of a missing one."""

    weight: Weight
    patterns: list[Name] = []
    missing_weight: Weight | None = None


class ThresholdsConfig(_Section):
    """Where MEDIUM and HIGH begin."""

    medium: Weight = 0.5
    high: Weight = 0.8


class RiskConfig(_Section):
    """Risk scoring: the profile's base risk plus the weight of each factor that fires. A HIGH
    request needs step-up proof (``[jwt.step_up]``) and prefers maximum-encryption cells."""

    high_risk_networks: list[NetworkListConfig] = []
    unusual_hours: UnusualHoursConfig | None = None
    money_paths: MoneyPathsConfig | None = None
    suspicious_user_agents: UserAgentsConfig | None = None
    thresholds: ThresholdsConfig = ThresholdsConfig()


class RequirementConfig(_Section):
    """What a cell must offer to serve a customer whose profile carries the flag."""

    certification: Name | None = None
    region: Name | None = None
    encryption: Literal["standard", "enhanced", "maximum"] | None = None


class BreakerConfig(_Section):
    """A cell circuit breaker with Resilience4j's semantics (unset fields take its defaults), or
    the consecutive form: ``consecutive_failures`` in a row open it for ``wait_in_open_ms``, then
    ``successes_to_close`` trial calls must all succeed."""

    sliding_window_size: Positive | None = None
    minimum_number_of_calls: Positive | None = None
    failure_rate_threshold_pct: Percent | None = None
    slow_call_rate_threshold_pct: Percent | None = None
    slow_call_duration_ms: Positive | None = None
    wait_in_open_ms: Positive | None = None
    permitted_number_of_calls_in_half_open_state: Positive | None = None
    half_open_failure_rate_threshold_pct: Percent | None = None
    consecutive_failures: Positive | None = None
    successes_to_close: Positive | None = None

    _WINDOW: ClassVar[tuple[str, ...]] = (
        "sliding_window_size",
        "minimum_number_of_calls",
        "failure_rate_threshold_pct",
        "permitted_number_of_calls_in_half_open_state",
        "half_open_failure_rate_threshold_pct",
    )

    def problems(self, path: str) -> list[str]:
        """What cannot be combined."""
        if self.consecutive_failures is None:
            if self.successes_to_close is not None:
                return [f"{path}.successes_to_close: only with consecutive_failures"]
            return []
        mixed = [name for name in self._WINDOW if getattr(self, name) is not None]
        problems = [f"{path}.{name}: not with consecutive_failures" for name in mixed]
        if self.successes_to_close is None:
            problems.append(f"{path}.successes_to_close: required with consecutive_failures")
        return problems

    def compile(self) -> dict[str, Any]:
        """The core's breaker settings: the fields given (the core expands the consecutive
        form)."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class SigningConfig(_Section):
    """How the gateway signs what it forwards to a cell (RFC 9421, RFC 9530): one key, by id."""

    keyid: Name
    alg: Literal["hmac-sha256", "ed25519"]
    secret: str | None = None
    secret_env: Name | None = None
    secret_b64: str | None = None
    private_key_file: str | None = None
    private_key_pem: str | None = None
    jwk: dict[str, Any] | None = None
    #: The signature's lifetime: ``expires = created + ttl_s``.
    ttl_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 60
    #: Content-Digest algorithms for bodies.
    digest: list[Literal["sha-256", "sha-512"]] = msgspec.field(default_factory=lambda: ["sha-256"])
    #: The Signature-Input and Signature member name.
    label: Name = "cellgate"


class TlsConfig(_Section):
    """TLS to an ``https://`` cell: the CA bundle its certificate must chain to (the only trust:
    the system's roots are never used for cells), the gateway's client certificate and key for
    mTLS, the name verified, and the lowest version. Paths are relative to the configuration."""

    #: PEM, one or more CERTIFICATEs.
    ca_file: Name
    #: PEM, the client certificate first, then any intermediates (with ``key_file``).
    cert_file: Name | None = None
    #: PEM, unencrypted: PKCS#8 ``PRIVATE KEY``, SEC1 ``EC PRIVATE KEY`` or PKCS#1
    #: ``RSA PRIVATE KEY``.
    key_file: Name | None = None
    #: The name the cell's certificate must carry (and the SNI); default: the endpoint's host.
    server_name: Name | None = None
    #: TLS 1.3 is always offered first; ``"1.3"`` refuses a cell that only speaks 1.2.
    min_version: Literal["1.2", "1.3"] = "1.2"


class CellConfig(_Section):
    """One cell: tier and region, where it listens, what it can take, what it is certified for."""

    id: Name
    tier: Name
    region: Name
    endpoint: Name
    capacity: Positive
    certifications: list[str] = []
    encryption: Literal["standard", "enhanced", "maximum"] = "standard"
    signed: bool = False
    breaker: BreakerConfig | None = None
    #: Send the customer's bearer token on to this cell (off: the cell gets identity headers).
    forward_bearer_token: bool = False
    #: The signing key when ``signed``.
    signing: SigningConfig | None = None
    #: The most forwards this cell takes at once; past it the next eligible cell, or 503.
    max_in_flight: Positive = 1024
    #: This cell's own timeouts and pool idle timeout, where they differ from ``[forward]``'s.
    connect_timeout_ms: Positive | None = None
    first_byte_timeout_ms: Positive | None = None
    request_timeout_ms: Positive | None = None
    pool_idle_timeout_ms: Positive | None = None
    #: TLS to the cell: required for an ``https://`` endpoint, refused for ``http://``.
    tls: TlsConfig | None = None


class HealthConfig(_Section):
    """Active health checks of cells."""

    path: str = "/health"
    interval_ms: Positive = 1000
    timeout_ms: Positive = 500
    rise: Positive = 2
    fall: Positive = 3


class RetryConfig(_Section):
    """Retries on the next eligible cell, only where they can never apply a request twice."""

    #: At most this many retries after the first attempt (0: none).
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    #: Answers retried (for GET, HEAD, OPTIONS, PUT, DELETE and requests with Idempotency-Key).
    on_status: list[Annotated[int, msgspec.Meta(ge=500, le=599)]] = msgspec.field(
        default_factory=lambda: [503]
    )
    #: The first backoff, doubled for each next retry up to ``backoff_max_ms``, jittered.
    backoff_base_ms: Annotated[int, msgspec.Meta(ge=0)] = 25
    backoff_max_ms: Annotated[int, msgspec.Meta(ge=0)] = 250


class ForwardConfig(_Section):
    """How requests reach cells."""

    connect_timeout_ms: Positive = 1000
    #: How long the first byte of an answer may take; none: only ``request_timeout_ms`` holds.
    first_byte_timeout_ms: Positive | None = None
    request_timeout_ms: Positive = 10_000
    #: What a timed-out forward counts as in the cell's breaker: a failure, or a slow call.
    timeout_counts_as: Literal["failure", "slow"] = "failure"
    #: Below common servers' keep-alive timeouts (5 s and up), so the gateway closes an idle
    #: connection before the cell does.
    pool_idle_timeout_ms: Positive = 4_000
    pool_max_idle_per_cell: Positive = 256
    max_request_bytes: Positive = 1 << 20
    #: The whole request body must arrive within this time, else 408.
    client_body_timeout_ms: Positive = 10_000
    max_response_bytes: Positive = 8 << 20
    #: Proxies (CIDRs) whose forwarded header names the client; none trusted by default.
    trusted_proxies: list[str] = []
    #: The header a trusted proxy names the client in.
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    retry: RetryConfig = RetryConfig()


class PathsConfig(_Section):
    """How request paths are made canonical before any rule runs (Envoy's names and meanings)."""

    #: Remove ``.`` and ``..`` segments (RFC 3986 section 5.2.4).
    normalize_path: bool = True
    #: Merge repeated slashes.
    merge_slashes: bool = True
    #: An escaped slash or backslash left after the server's decoding: refuse it (400), keep it
    #: as text, or unescape it into a slash.
    path_with_escaped_slashes_action: Literal[
        "reject_request", "keep_unchanged", "unescape_and_forward"
    ] = "reject_request"


class ServerConfig(_Section):
    """The gateway's own process."""

    #: On SIGTERM the gateway stops accepting and lets requests in flight finish, for at most
    #: this long (then the workers are stopped).
    shutdown_grace_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30


class ProfilesConfig(_Section):
    """Where customer profiles come from: a JSON Lines file, relative to the configuration file."""

    source: Name


class AdminConfig(_Section):
    """The admin API: HS256 admin tokens (audience ``cellgate-admin``) signed with this secret."""

    secret: str | None = None
    secret_env: Name | None = None


Keep = Literal["keep", "hash", "drop"]

#: The DER of Ed25519's algorithm identifier (RFC 8410), which an Ed25519 PKCS#8 key carries.
_ED25519_OID = bytes.fromhex("06032b6570")


class AuditConfig(_Section):
    """The audit trail: a record of every request and admin action, hash-chained per worker into
    JSON Lines segments under ``directory``, covered by Ed25519-signed digests."""

    #: Where the trail lives, relative to the configuration file.
    directory: str = "audit"
    #: ``strict``: an answer leaves only once its record is on disk (group commit);
    #: ``buffered``: records are on disk within ``flush_interval_ms``.
    durability: Literal["strict", "buffered"] = "strict"
    #: When the trail cannot take a record: refuse 503 audit_unavailable, or serve and count.
    on_failure: Literal["fail_closed", "fail_open"] = "fail_closed"
    queue_records: Positive = 65_536
    flush_interval_ms: Positive = 200
    rotate_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 64 << 20
    rotate_hourly: bool = True
    digest_every_records: Positive = 10_000
    digest_every_s: Positive = 60
    #: Closed segments older than this many days are removed (none: kept).
    retention_days: Positive | None = None
    #: Closed segments are removed, oldest first, while a chain's exceed this many bytes.
    retention_bytes: Positive | None = None
    client_address: Keep = "keep"
    user_agent: Keep = "keep"
    #: The HMAC-SHA-256 key of hashed fields: an environment variable holding it (32+ bytes).
    hash_key_env: Name | None = None
    #: The digests' Ed25519 key: a PEM PKCS#8 ``PRIVATE KEY`` file, or an environment variable
    #: holding that PEM.
    signing_key_file: str | None = None
    signing_key_env: Name | None = None


class StateConfig(_Section):
    """Where the state that must be one truth lives: revocations and quotas."""

    #: The node's shared-memory zone, which every worker maps: ``auto`` (on with more than one
    #: worker), ``on`` or ``off`` (each worker keeps its own).
    zone: Literal["auto", "on", "off"] = "auto"
    #: Where ``cellgate serve`` creates the zone file (removed when it exits).
    zone_directory: str = "/dev/shm"
    #: Slots for revoked tokens, and as many for customer cut-offs (32 bytes each).
    revocation_slots: Annotated[int, msgspec.Meta(ge=8, le=1 << 26)] = 65_536
    #: Slots for customers' quota state (32 bytes each).
    quota_slots: Annotated[int, msgspec.Meta(ge=8, le=1 << 26)] = 262_144
    #: Where lasting state is kept (the revocation log), relative to the configuration file.
    directory: str = "state"
    #: The longest any accepted token is valid (``exp - iat`` plus leeway): a customer cut-off
    #: this old refuses nothing more and is forgotten, and tokens valid longer (or without
    #: ``iat`` or ``exp``) are refused. None: cut-offs kept until lifted.
    max_token_lifetime_s: Positive | None = None
    #: Redis shared by every node (``redis://[user:password@]host[:port][/db]`` or
    #: ``redis+unix:///path``): revocations, quotas and breaker openings across nodes. None:
    #: state stays on the node.
    redis: str | None = None
    #: The longest a Redis command may take before Redis is taken to be down.
    redis_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50
    #: How long Redis is taken to be down after a failure before it is asked again.
    redis_retry_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1_000
    #: ``exact``: each request is one atomic check in Redis; ``leased``: a worker takes up to
    #: ``redis_lease`` requests of a customer's budget at a time (at most ``redis_lease - 1``
    #: requests a worker ahead of the exact rule).
    redis_quotas: Literal["exact", "leased"] = "exact"
    #: Requests one lease takes at most.
    redis_lease: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10
    #: How long a lease's unspent requests may be spent.
    redis_lease_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1_000
    #: Quotas while Redis cannot be reached: ``refuse_money_paths`` (503 quota_unavailable for
    #: ``[risk.money_paths]``, every request when none are configured; the node's own limits
    #: for the rest), ``refuse`` (every limited request) or ``local`` (the node's own limits).
    #: Revocations are always kept from the node's own copy.
    redis_unavailable: Literal["refuse_money_paths", "refuse", "local"] = "refuse_money_paths"
    #: The prefix of cellgate's Redis keys and channel.
    redis_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]+$")] = "cellgate"
    #: For a ``rediss://`` URL: the CA bundle to trust (PEM; none: the system's roots), and the
    #: client certificate and key to present (PEM, both or neither), relative to the
    #: configuration file.
    redis_tls_ca_file: str | None = None
    redis_tls_cert_file: str | None = None
    redis_tls_key_file: str | None = None


class Config(_Section):
    """A whole cellgate configuration."""

    jwt: JwtConfig
    cells: Annotated[list[CellConfig], msgspec.Meta(min_length=1)]
    profiles: ProfilesConfig
    tiers: dict[str, TierConfig] = {}
    health: HealthConfig = HealthConfig()
    forward: ForwardConfig = ForwardConfig()
    paths: PathsConfig = PathsConfig()
    server: ServerConfig = ServerConfig()
    admin: AdminConfig | None = None
    risk: RiskConfig | None = None
    compliance: dict[str, RequirementConfig] = {}
    breaker: BreakerConfig = BreakerConfig()
    audit: AuditConfig | None = None
    state: StateConfig = StateConfig()
    #: The directory relative paths are resolved against (not read from the file).
    base_dir: str = "."
    #: The core's settings of every key (inline, then the JWKS file's), each with the place that
    #: wrote it: compiled once, while validating, so key files are read once.
    compiled_keys: list[tuple[dict[str, Any], str]] = []
    #: Each cell's compiled signer settings (None for a cell that is not signed), compiled once.
    compiled_signers: list[dict[str, Any] | None] = []
    #: The core's audit settings (keys read), compiled once; None without ``[audit]``.
    compiled_audit: dict[str, Any] | None = None
    #: Each cell's compiled TLS settings, its files' text (None for a plain cell), read once.
    compiled_tls: list[dict[str, Any] | None] = []
    #: TLS to Redis, its files' text (None without a ``rediss://`` URL), read once.
    compiled_redis_tls: dict[str, str] | None = None

    _internal_fields: ClassVar[tuple[str, ...]] = (
        "base_dir",
        "compiled_keys",
        "compiled_signers",
        "compiled_audit",
        "compiled_tls",
        "compiled_redis_tls",
    )


def _audit_settings(raw: Any, base_dir: str, errors: list[str]) -> dict[str, Any] | None:
    """The core's ``audit`` settings: the directory resolved, the keys read; None (with errors
    added) when a key cannot be had."""
    audit = validate(raw, AuditConfig, [], "audit")
    if audit is None:
        return None
    count = len(errors)
    pem = None
    given = [n for n in ("signing_key_file", "signing_key_env") if getattr(audit, n) is not None]
    if len(given) != 1:
        errors.append(
            "audit.signing_key_file: give exactly one of signing_key_file or signing_key_env"
        )
    elif audit.signing_key_file is not None:
        file = Path(base_dir, audit.signing_key_file)
        try:
            pem = file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "not a PEM text file"
            errors.append(f"audit.signing_key_file: cannot read {str(file)!r}: {reason}")
    else:
        pem = os.environ.get(audit.signing_key_env)
        if pem is None:
            errors.append(f"audit.signing_key_env: {audit.signing_key_env} is not set")
    der = None
    if pem is not None:
        try:
            der = pem_private_key(pem, f"audit.{given[0]}")
        except ValueError as err:
            errors.append(str(err))
    if der is not None and _ED25519_OID not in der[:16]:
        errors.append(f"audit.{given[0]}: not an Ed25519 key")
    hashed = "hash" in (audit.client_address, audit.user_agent)
    hash_key = None
    if audit.hash_key_env is not None:
        value = os.environ.get(audit.hash_key_env)
        if value is None:
            errors.append(f"audit.hash_key_env: {audit.hash_key_env} is not set")
        elif len(value.encode()) < 32:
            errors.append("audit.hash_key_env: the key needs at least 32 bytes")
        else:
            hash_key = value.encode()
    elif hashed:
        errors.append("audit.hash_key_env: required when client_address or user_agent is hash")
    if len(errors) > count or der is None:
        return None
    settings = msgspec.structs.asdict(audit)
    for name in ("signing_key_file", "signing_key_env", "hash_key_env", "retention_days"):
        del settings[name]
    settings["directory"] = str(Path(base_dir, audit.directory).resolve())
    settings["retention_s"] = audit.retention_days and audit.retention_days * 86_400
    settings["signing_key_b64"] = base64.b64encode(der).decode()
    settings["hash_key_b64"] = hash_key and base64.b64encode(hash_key).decode()
    return settings


def _endpoint_problem(endpoint: str) -> str | None:
    url = urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        return f"must be http://host:port or https://host[:port], got {endpoint!r}"
    try:
        # https:// may leave its port to the default, 443.
        port = url.port or (443 if url.scheme == "https" else 0)
    except ValueError:
        port = 0
    if port == 0:
        return f"port must be 1-65535, got {endpoint!r}"
    if url.username is not None:
        return "must not carry credentials"
    if url.path not in ("", "/") or url.query or url.fragment:
        return "must not carry a path, query or fragment"
    return None


def _table(raw: Any, key: str, default: Any = None) -> Any:
    return raw.get(key, default) if isinstance(raw, dict) else None


def _check_semantics(
    raw: dict[str, Any], base_dir: str, errors: list[str]
) -> tuple[
    list[tuple[dict[str, Any], str]], list[dict[str, Any] | None], list[dict | None], dict | None
]:
    """The checks past types and bounds, run on every part that is structurally valid on its own
    (its structural errors are already reported), so that all problems show at once. Returns
    the compiled keys with their paths, each cell's signer settings, each cell's TLS settings
    and the audit settings (complete when no error was added)."""
    jwt = _table(raw, "jwt")
    keys = _table(jwt, "keys")
    compiled: list[tuple[dict[str, Any], str]] = []
    for i, item in enumerate(keys if isinstance(keys, list) else []):
        key = validate(item, JwtKeyConfig, [], f"jwt.keys[{i}]")
        if key is not None:
            path = f"jwt.keys[{i}]"
            settings = key_settings(key, path, base_dir, errors)
            compiled.append((settings or {"kid": key.kid}, path))
    jwks_file = _table(jwt, "jwks_file")
    if isinstance(jwks_file, str) and jwks_file:
        compiled.extend(jwks_keys(jwks_file, base_dir, errors))
    elif isinstance(jwt, dict) and not keys and "jwks_file" not in jwt:
        errors.append("jwt.keys: give at least one key, or jwt.jwks_file")
    seen_kids: dict[str, str] = {}
    for settings, path in compiled:
        kid = settings["kid"]
        if kid in seen_kids:
            errors.append(f"{path}.kid: duplicate kid {kid!r} (also {seen_kids[kid]})")
        seen_kids.setdefault(kid, path)
    signers, tls = _check_cells(raw, base_dir, errors)
    audit = None
    if _table(raw, "audit") is not None:
        audit = _audit_settings(raw["audit"], base_dir, errors)
    _check_compliance(raw, errors)
    breaker = validate(_table(raw, "breaker", {}), BreakerConfig, [], "breaker")
    if breaker is not None:
        errors.extend(breaker.problems("breaker"))
    health = _table(raw, "health", {})
    health_path = field_value(health, HealthConfig, "path")
    if health_path is not None and not health_path.startswith("/"):
        errors.append("health.path: must start with /")
    timeout_ms = field_value(health, HealthConfig, "timeout_ms")
    interval_ms = field_value(health, HealthConfig, "interval_ms")
    if None not in (timeout_ms, interval_ms) and timeout_ms > interval_ms:
        errors.append("health.timeout_ms: must not exceed health.interval_ms")
    if _table(raw, "admin") is not None:
        admin = validate(raw["admin"], AdminConfig, [], "admin")
        shared = None if admin is None else secret(admin, "admin", errors)
        if shared is not None and len(shared) < 32:
            errors.append(f"admin.secret: needs at least 32 bytes, got {len(shared)}")
    profiles = validate(_table(raw, "profiles"), ProfilesConfig, [], "profiles")
    if profiles is not None:
        source = Path(base_dir, profiles.source)
        if not source.is_file():
            errors.append(f"profiles.source: no such file {str(source)!r}")
    return compiled, signers, tls, audit


def _cells(raw: dict[str, Any]) -> list[Any]:
    cells = _table(raw, "cells")
    return cells if isinstance(cells, list) else []


def _check_cells(
    raw: dict[str, Any], base_dir: str, errors: list[str]
) -> tuple[list[dict | None], list[dict | None]]:
    """Each cell's cross-references and what its fields mean, field by field: a cell with a bad
    capacity still has its tier and endpoint checked. Returns each cell's signer settings and
    TLS settings."""
    tiers = _table(raw, "tiers", {})
    seen_cells: set[str] = set()
    signers: list[dict | None] = []
    tls: list[dict | None] = []
    for i, item in enumerate(_cells(raw)):
        cell_id = field_value(item, CellConfig, "id")
        if cell_id is not None and cell_id in seen_cells:
            errors.append(f"cells[{i}].id: duplicate cell id {cell_id!r}")
        if cell_id is not None:
            seen_cells.add(cell_id)
        tier = field_value(item, CellConfig, "tier")
        if isinstance(tiers, dict) and tier is not None and tier not in tiers:
            known = ", ".join(sorted(tiers)) or "none"
            errors.append(f"cells[{i}].tier: unknown tier {tier!r} (tiers: {known})")
        endpoint = field_value(item, CellConfig, "endpoint")
        problem = None if endpoint is None else _endpoint_problem(endpoint)
        if problem is not None:
            errors.append(f"cells[{i}].endpoint: {problem}")
        tls_table = field_value(item, CellConfig, "tls")
        if tls_table is not None or not (isinstance(item, dict) and "tls" in item):
            usable = endpoint if problem is None else None
            tls.append(tls_settings(tls_table, usable, f"cells[{i}].tls", base_dir, errors))
        else:
            tls.append(None)
        signed = field_value(item, CellConfig, "signed")
        signing = field_value(item, CellConfig, "signing")
        signer = None
        if signed is True and signing is None and "signing" not in (item or {}):
            errors.append(f"cells[{i}].signing: required when signed = true")
        elif signed is False and signing is not None:
            errors.append(f"cells[{i}].signing: given, but signed = false")
        elif signed is True and signing is not None:
            signer = signer_settings(signing, f"cells[{i}].signing", base_dir, errors)
        signers.append(signer)
        breaker = field_value(item, CellConfig, "breaker")
        if breaker is not None:
            errors.extend(breaker.problems(f"cells[{i}].breaker"))
    return signers, tls


def _check_compliance(raw: dict[str, Any], errors: list[str]) -> None:
    """Each compliance rule asks for something: a region some cell is in, a certification some
    cell holds. Skipped where a cell's own region or certifications are wrong (their errors are
    listed), so that a rule is never blamed for a cell's mistake."""
    rules = _table(raw, "compliance", {})
    cells = _cells(raw)
    if not isinstance(rules, dict) or not cells:
        return
    regions = [field_value(item, CellConfig, "region") for item in cells]
    certified = [field_value(item, CellConfig, "certifications") for item in cells]
    for flag, rule in rules.items():
        path = f"compliance.{flag}"
        if isinstance(rule, dict) and not rule:
            errors.append(f"{path}: give a certification, a region or an encryption level")
        region = field_value(rule, RequirementConfig, "region")
        if region is not None and None not in regions and region not in regions:
            known = ", ".join(sorted(set(regions))) or "none"
            errors.append(f"{path}.region: no cell is in region {region!r} (regions: {known})")
        certification = field_value(rule, RequirementConfig, "certification")
        held = {c for certs in certified if certs is not None for c in certs}
        if certification is not None and None not in certified and certification not in held:
            known = ", ".join(sorted(held)) or "none"
            errors.append(
                f"{path}.certification: no cell is certified {certification!r}"
                f" (certifications: {known})"
            )


def _profile_errors(raw: dict[str, Any], base_dir: str) -> list[str]:
    """The core's errors for the profile source, each line against the tiers and the regions of
    the cells, for a configuration refused anyway (a valid one has them from the router's build):
    so that a bad profile line shows with every other error. None where the tiers, the cells'
    regions or the source cannot be read (their own errors are listed)."""
    tiers = _table(raw, "tiers", {})
    regions = [field_value(item, CellConfig, "region") for item in _cells(raw)]
    source = field_value(_table(raw, "profiles"), ProfilesConfig, "source")
    if not isinstance(tiers, dict) or None in regions or not regions or source is None:
        return []
    try:
        profiles = Path(base_dir, source).read_bytes()
    except OSError:
        return []
    rules = _table(raw, "compliance", {})
    flags = sorted(rules) if isinstance(rules, dict) else []
    problems = _core.check_profiles(profiles, sorted(tiers), list(dict.fromkeys(regions)), flags)
    return [f"profiles ({source}): {problem}" for problem in problems]


def parse_config(
    text: str, base_dir: str | os.PathLike[str] = ".", source: str | None = None
) -> Config:
    """Validates TOML text; raises :class:`ConfigError` listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"toml: {err}"], source) from None
    return config_from_table(raw, base_dir, source)


def config_from_table(
    raw: dict[str, Any], base_dir: str | os.PathLike[str] = ".", source: str | None = None
) -> Config:
    """Validates a configuration already read from TOML into tables; raises
    :class:`ConfigError` listing every problem."""
    errors: list[str] = []
    config = validate(raw, Config, errors)
    keys, signers, tls, audit = _check_semantics(raw, str(base_dir), errors)
    redis_tls = _check_state(raw, str(base_dir), errors)
    if errors or config is None:
        raise ConfigError(errors + _profile_errors(raw, str(base_dir)), source)
    return msgspec.structs.replace(
        config,
        base_dir=str(base_dir),
        compiled_keys=keys,
        compiled_signers=signers,
        compiled_audit=audit,
        compiled_tls=tls,
        compiled_redis_tls=redis_tls,
    )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Reads and validates a configuration file; relative paths resolve against its directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"cannot read configuration: {err.strerror}"], str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(["configuration is not UTF-8"], str(path)) from None
    return parse_config(text, path.resolve().parent, source=str(path))


def config_warnings(config: Config) -> list[str]:
    """What a valid configuration leaves open, as ``path: message`` lines: no ``jwt.issuer`` or
    no ``jwt.audience`` means a token minted by another issuer, or for another service under the
    same keys, is accepted (RFC 8725 sections 3.8 and 3.9)."""
    warnings = []
    if config.jwt.issuer is None:
        warnings.append(
            "jwt.issuer: not set, so tokens of any issuer signed with these keys are accepted"
            " (RFC 8725 section 3.8)"
        )
    if config.jwt.audience is None:
        warnings.append(
            "jwt.audience: not set, so tokens minted for another service are accepted"
            " (RFC 8725 section 3.9)"
        )
    return warnings


def admin_secret(config: Config) -> bytes | None:
    """The admin token secret, or None when the admin API is off."""
    if config.admin is None:
        return None
    return secret(config.admin, "admin", [])


def compile_settings(
    config: Config, zone_names: Iterable[str] = (), state_zone: str | None = None
) -> bytes:
    """The core's settings for ``config``, as the JSON the core decodes; ``zone_names`` are the
    time zones the profiles use, compiled into offset tables for the risk model; ``state_zone``
    the node's shared-memory zone file the router maps (none: state of its own)."""
    jwt = config.jwt
    settings = {
        "jwt": {
            "issuer": jwt.issuer,
            "audience": jwt.audience,
            "typ": jwt.typ,
            "leeway_s": jwt.leeway_s,
            "customer_claim": jwt.customer_claim,
            "require_exp": jwt.require_exp,
            "cache_size": jwt.cache_size,
            "cache_ttl_s": jwt.cache_ttl_s,
            "step_up": msgspec.structs.asdict(jwt.step_up),
            "keys": [settings for settings, _ in config.compiled_keys],
        },
        "tiers": {
            name: {
                "placement": tier.placement,
                "rate_limit": tier.rate_limit and msgspec.structs.asdict(tier.rate_limit),
            }
            for name, tier in config.tiers.items()
        },
        "cells": [
            {
                "id": c.id,
                "tier": c.tier,
                "region": c.region,
                "endpoint": c.endpoint.rstrip("/"),
                "capacity": c.capacity,
                "certifications": c.certifications,
                "encryption": c.encryption,
                "signed": c.signed,
                "breaker": c.breaker and c.breaker.compile(),
                "forward_bearer_token": c.forward_bearer_token,
                "max_in_flight": c.max_in_flight,
                "connect_timeout_ms": c.connect_timeout_ms,
                "first_byte_timeout_ms": c.first_byte_timeout_ms,
                "request_timeout_ms": c.request_timeout_ms,
                "pool_idle_timeout_ms": c.pool_idle_timeout_ms,
                "signing": signer,
                "tls": tls,
            }
            for c, signer, tls in zip(
                config.cells,
                config.compiled_signers or [None] * len(config.cells),
                config.compiled_tls or [None] * len(config.cells),
                strict=True,
            )
        ],
        "risk": config.risk and _compile_risk(config.risk, zone_names),
        "compliance": {
            flag: msgspec.structs.asdict(rule) for flag, rule in config.compliance.items()
        },
        "breaker": config.breaker.compile(),
        "health": msgspec.structs.asdict(config.health),
        "forward": {
            k: v
            for k, v in msgspec.structs.asdict(config.forward).items()
            if k not in ("max_request_bytes", "client_body_timeout_ms")
        },
        "paths": msgspec.structs.asdict(config.paths),
        "audit": config.compiled_audit,
        "state": {
            "zone": state_zone,
            "max_token_lifetime_s": config.state.max_token_lifetime_s,
            "redis": _redis_settings(config.state, config.compiled_redis_tls),
        },
    }
    return msgspec.json.encode(settings)


def _redis_settings(state: StateConfig, tls: dict[str, str] | None) -> dict[str, Any] | None:
    """The core's Redis settings (``tls``: the TLS files' text); None without ``[state]
    redis``."""
    if state.redis is None:
        return None
    return {
        "url": state.redis,
        "timeout_ms": state.redis_timeout_ms,
        "retry_ms": state.redis_retry_ms,
        "quotas": state.redis_quotas,
        "lease": state.redis_lease,
        "lease_ms": state.redis_lease_ms,
        "unavailable": state.redis_unavailable,
        "prefix": state.redis_prefix,
        "tls": tls,
    }


_REDIS_URL = re.compile(r"^(rediss?://[^\s/]*(/\d+)?|redis\+unix:///\S+)$")
_REDIS_TLS_FILES = (
    ("redis_tls_ca_file", "ca_pem"),
    ("redis_tls_cert_file", "cert_pem"),
    ("redis_tls_key_file", "key_pem"),
)


def _check_state(raw: dict[str, Any], base_dir: str, errors: list[str]) -> dict[str, str] | None:
    """``[state] redis`` must be a URL the core can connect to; for a ``rediss://`` one, its TLS
    files are read: returns their text by the core's names (None without TLS)."""
    state = _table(raw, "state", {})
    url = field_value(state, StateConfig, "redis")
    if isinstance(url, str) and not _REDIS_URL.match(url):
        errors.append(
            f"state.redis: {url!r} is not redis[s]://[user:password@]host[:port][/db]"
            " or redis+unix:///path"
        )
        return None
    given = {
        field: name
        for field, _ in _REDIS_TLS_FILES
        if isinstance(name := field_value(state, StateConfig, field), str)
    }
    over_tls = isinstance(url, str) and url.startswith("rediss://")
    if given and not over_tls:
        errors.append(f"state.{next(iter(given))}: given, but state.redis is not rediss://")
        return None
    if not over_tls:
        return None
    if ("redis_tls_cert_file" in given) != ("redis_tls_key_file" in given):
        errors.append(
            "state.redis_tls_cert_file: give it and state.redis_tls_key_file together"
            " (a client certificate and its key)"
        )
        return None
    texts = {
        pem: read_pem(base_dir, given[field], f"state.{field}", errors)
        for field, pem in _REDIS_TLS_FILES
        if field in given
    }
    if None in texts.values():
        return None
    return {pem: text for pem, text in texts.items() if text is not None}


def _compile_risk(risk: RiskConfig, zone_names: Iterable[str]) -> dict[str, Any]:
    compiled = msgspec.to_builtins(risk)
    compiled["zones"] = compile_zones(sorted(set(zone_names)))
    return compiled


_TIMEZONE = re.compile(rb'"timezone"\s*:\s*"([^"\\]+)"')


def profile_zones(profiles_jsonl: bytes) -> set[str]:
    """The time zone names a profile source uses (found without parsing every line)."""
    return {match.decode() for match in _TIMEZONE.findall(profiles_jsonl)}


def build_router(
    config: Config, clock: _core.Clock | None = None, state_zone: str | None = None
) -> _core.Router:
    """Compiles ``config`` and its profiles into a router, mapping ``state_zone`` when given;
    :class:`ConfigError` on refusal."""
    profiles_path = Path(config.base_dir, config.profiles.source)
    try:
        profiles = profiles_path.read_bytes()
    except OSError as err:
        raise ConfigError(
            [f"profiles.source: cannot read {str(profiles_path)!r}: {err.strerror}"]
        ) from None
    try:
        zones = profile_zones(profiles) if config.risk else ()
        settings = compile_settings(config, zones, state_zone)
    except ValueError as err:  # an unknown time zone, named by compile_zones
        raise ConfigError([f"profiles ({config.profiles.source}): timezone: {err}"]) from None
    try:
        return _core.Router(settings, profiles, clock)
    except _core.CoreConfigError as err:
        key_paths = [path for _, path in config.compiled_keys]
        raise ConfigError(
            [_name_key(_name_profile_file(e, config), key_paths) for e in err.args[0]]
        ) from None


_CORE_KEY_ERROR = re.compile(r"^jwt\.keys\[(\d+)\]\.")


def _name_key(error: str, key_paths: list[str]) -> str:
    """The core numbers keys as compiled (inline keys, then the JWKS file's); name the source."""
    match = _CORE_KEY_ERROR.match(error)
    if match is None or int(match[1]) >= len(key_paths):
        return error
    return f"{key_paths[int(match[1])]}.{error[match.end() :]}"


def _name_profile_file(error: str, config: Config) -> str:
    """Names the profile file in a core error: ``profiles (customers.jsonl): line 3: ...``."""
    prefix = "profiles: "
    if not error.startswith(prefix):
        return error
    return f"profiles ({config.profiles.source}): {error[len(prefix) :]}"
