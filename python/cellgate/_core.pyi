"""Type stubs for cellgate's compiled core."""

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

__version__: str

Response = tuple[int, list[tuple[str, str]], bytes]

class CoreConfigError(ValueError):
    """The compiled configuration or profile source was refused; ``args[0]`` lists every error."""

def check_profiles(
    source: bytes, tiers: list[str], regions: list[str], flags: list[str]
) -> list[str]:
    """Every error of a JSON Lines profile source (``line N: message``) against these tiers, the
    regions that have a cell and the compliance flags; time zones are not checked."""

def check_cell_tls(
    ca_pem: str,
    host: str,
    *,
    cert_pem: str | None = None,
    key_pem: str | None = None,
    server_name: str | None = None,
    min_version: str = "1.2",
) -> list[str]:
    """Every problem of one cell's TLS material (the PEM text of its files) for a cell whose
    endpoint's host is ``host``, as ``field: message`` naming ``ca_file``, ``cert_file``,
    ``key_file``, ``server_name`` or ``min_version``; empty when a client configuration builds."""

class Clock:
    """A router's time source: ``Clock()`` is the system clock, ``Clock.manual(t)`` a test clock."""

    def __init__(self) -> None: ...
    @staticmethod
    def manual(start_s: float) -> Clock: ...
    @property
    def is_manual(self) -> bool: ...
    def now(self) -> float: ...
    def set(self, t_s: float) -> None:
        """Sets a manual clock; ValueError for the system clock."""
    def advance(self, dt_s: float) -> None: ...

class Decision:
    """Where a request goes, or why it may not; a routed one holds a cell slot until forwarded."""

    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def request_id(self) -> str: ...
    @property
    def trace_id(self) -> str:
        """The W3C trace id: continued from a valid ``traceparent``, else a new one."""
    @property
    def traceparent(self) -> str:
        """The ``traceparent`` the cell receives (the gateway's span)."""
    @property
    def path(self) -> str | None:
        """The canonical path the rules saw and the cell receives; None when it was refused."""
    @property
    def customer_id(self) -> str | None: ...
    @property
    def cell_id(self) -> str | None: ...
    @property
    def encryption(self) -> str | None: ...
    @property
    def holds_slot(self) -> bool: ...
    @property
    def problem(self) -> Response | None:
        """The problem+json ``(status, headers, body)`` of a refusal."""
    @property
    def risk(self) -> tuple[float, str] | None:
        """``(score, level)`` when risk is scored."""
    @property
    def risk_factors(self) -> list[tuple[str, str]]:
        """Each risk factor that fired, as ``(kind, reason)``."""
    @property
    def fields(self) -> list[tuple[str, str]]:
        """The gateway's own response fields (RateLimit fields; Retry-After on a 429)."""
    def release(self) -> bool:
        """Gives the cell slot back without forwarding; says whether one was held."""

class Bridge:
    """One event loop's end of the core: the reactor, tasks and cell connections that forward
    requests on this loop's own thread. Use it only from that thread."""

    def __init__(self, event_loop: asyncio.AbstractEventLoop) -> None: ...
    def fileno(self) -> int:
        """The descriptor to watch: readable when a cell socket, a timer or a completion is."""
    def drain(self) -> None:
        """Runs what became ready and resolves finished futures; call from ``loop.add_reader``."""
    @property
    def tasks(self) -> int:
        """How many forwards and connection drivers are alive."""
    def noop(self) -> asyncio.Future[None]:
        """A future resolved with None after one wake-up of the loop: the bridge measured alone."""

class Router:
    """The hot path: compiled configuration, profiles, cells and the forwarding client."""

    def __init__(
        self, settings_json: bytes, profiles_jsonl: bytes, clock: Clock | None = None
    ) -> None:
        """Raises CoreConfigError listing every problem."""
    def decide(
        self,
        method: str,
        path: str,
        authorization: str | None,
        client: str,
        user_agent: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        absolute_form: bool = False,
    ) -> Decision:
        """``path`` as the server decoded it (made canonical first: 400 ``bad_path``);
        ``client`` the peer; ``headers`` supply traceparent and, from a trusted proxy, the
        client's forwarded address."""
    def explain(
        self,
        method: str,
        path: str,
        authorization: str | None,
        client: str,
        user_agent: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
    ) -> str:
        """What ``decide`` would decide now and why, as JSON; counts and takes nothing."""
    def report(self, decision: Decision, success: bool) -> bool:
        """Feeds the cell's breaker with a routed decision's outcome and gives its slot back."""
    def forward(
        self,
        bridge: Bridge,
        decision: Decision,
        method: str,
        query: str,
        headers: list[tuple[str, str]],
        body: bytes,
        scheme: str = "http",
    ) -> asyncio.Future[Response]:
        """Sends a routed decision's request to its cell, to the decision's canonical path;
        ValueError if it holds no route."""
    def serve(
        self,
        bridge: Bridge,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        client: str,
        scheme: str = "http",
        absolute_form: bool = False,
    ) -> Response | asyncio.Future[Response]:
        """``decide`` then, when routed, ``forward`` in one call, for a request without a body:
        a refusal's problem answer at once, or a future of the cell's answer."""
    def refuse(
        self,
        bridge: Bridge,
        decision: Decision,
        reason: str | None = None,
        detail: str | None = None,
    ) -> Response | asyncio.Future[Response] | None:
        """Answers and records a decision that is not forwarded: its own refusal, or
        ``body_too_large`` / ``body_incomplete`` / ``client_body_timeout`` with ``detail``;
        ``client_disconnected`` records it as cancelled and answers None. In strict audit
        mode, a future of the answer resolved once the record is durable."""
    def replay(self, record_json: str) -> str:
        """What this configuration decides today for the request an audit record describes,
        beside what was decided then (JSON); ValueError for a line that is not a record."""
    def start_audit(self) -> None:
        """Takes this worker's audit chain and starts its writer; OSError when it cannot."""
    def stop_audit(self) -> None:
        """Writes, signs and closes everything the trail holds."""
    @property
    def audit(self) -> dict[str, Any] | None:
        """The trail's state, written, lost, refused and queued counts; None without [audit]."""
    def record_admin(
        self,
        admin: str,
        action: str,
        target_json: str,
        status: int,
        outcome: str,
        reason: str | None = None,
    ) -> bool:
        """Records an admin action before it acts; False: refuse it 503 audit_unavailable."""
    def start_health_checks(self) -> None: ...
    def stop_health_checks(self) -> None: ...
    def set_cell_health(self, cell_id: str, healthy: bool) -> None:
        """KeyError for an unknown cell."""
    def cells(self) -> list[dict[str, Any]]: ...
    def upsert_profile(self, profile_json: bytes) -> None:
        """ValueError for a bad profile."""
    def remove_profile(self, customer_id: str) -> bool: ...
    @property
    def profile_count(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    def revoke_token(self, jti: str, forget_after_s: int) -> None:
        """Refuses the token with ``jti`` (401 token_revoked) until ``forget_after_s``."""
    def revoke_customer(self, customer_id: str, issued_before_s: float) -> None:
        """Refuses the customer's tokens issued before ``issued_before_s`` (and any without iat)."""
    def lift_customer_revocation(self, customer_id: str) -> bool: ...
    @property
    def revocations(self) -> dict[str, int]:
        """``{"tokens": n, "customers": m}``."""
    def start_sharing(self) -> None:
        """Starts the exchange with the other nodes through Redis (with ``[state] redis``)."""
    def stop_sharing(self) -> None: ...
    def load_revocations(self, entries_json: bytes) -> int:
        """Loads revocation log entries (a JSON array) without publishing them (with a zone,
        which holds them already, only for writing back to Redis); ValueError for a bad
        entry."""
    def take_heard_revocations(self) -> bytes:
        """The revocations heard from other nodes since the last call, a JSON array of log
        entries."""
    @property
    def redis(self) -> dict[str, int | str | bool] | None:
        """The link to Redis (url, up, subscribed) and its counters; None without Redis."""
    @property
    def state_scope(self) -> str:
        """``"cluster"`` with Redis, ``"node"`` when revocations and quotas live in the node's
        zone, else ``"worker"``."""
    @property
    def state(self) -> dict[str, int | str] | None:
        """The node's zone and its counters (as ``Zone.counters``); None without a zone."""

class Zone:
    """The node's shared-memory zone: revocations and quotas every worker maps."""

    def __init__(self, path: str, max_token_lifetime_s: int | None = None) -> None: ...
    @staticmethod
    def create(
        path: str,
        revocation_slots: int,
        quota_slots: int,
        max_token_lifetime_s: int | None = None,
        cell_slots: int = 64,
        worker_slots: int = 64,
    ) -> Zone: ...
    def revoke_token(self, jti: str, forget_after_s: int) -> None: ...
    def revoke_customer(self, customer_id: str, issued_before_s: float) -> None: ...
    def lift_customer(self, customer_id: str) -> bool: ...
    @property
    def counters(self) -> dict[str, int | str]:
        """Revoked tokens and customers, evictions per table, lock takeovers and sizes."""
    def hammer(self, seconds: float) -> int:
        """Tests only: a tight loop of zone updates for ``seconds``."""
    def hold(self, cell: int, slots: int, seconds: float) -> None:
        """Tests only: holds ``slots`` in-flight slots on cell ``cell`` for ``seconds``."""

HeaderList = list[tuple[str, str]] | Mapping[str, str]

class SignatureError(ValueError):
    """A request's signature was refused (raised by ``RequestVerifier.verify`` and
    ``verify_request``); the message is ``"<reason>: <detail>"``."""

    reason: str
    """One of ``missing_signature``, ``malformed_signature``, ``unknown_key``,
    ``bad_signature``, ``stale_signature``, ``digest_mismatch``, ``replayed``,
    ``missing_component``."""
    detail: str

class RequestVerifier:
    """Verifies RFC 9421 request signatures (``hmac-sha256``, ``ed25519``) and their RFC 9530
    Content-Digest, accepting each nonce once.

    ``keys``: dicts of ``keyid``, ``alg`` and one of ``secret_b64``, ``spki_b64``, ``jwk`` or
    ``pkcs8_b64`` (its public half is used); several at once, so keys rotate. ``required``:
    component names every signature must cover (``content-digest`` only when there is a body);
    None: ``@method @authority @path @query content-digest x-request-id``. ValueError names
    ``keys[i].<field>`` for a bad key."""

    def __init__(
        self,
        keys: Sequence[Mapping[str, Any]],
        required: Sequence[str] | None = None,
        max_age_s: int = 300,
        clock_skew_s: int = 5,
        label: str | None = None,
        nonce_capacity: int = 100_000,
    ) -> None: ...
    def verify(
        self,
        method: str,
        authority: str,
        path: str,
        query: str,
        headers: HeaderList,
        body: bytes,
        now_s: float | None = None,
        scheme: str = "https",
    ) -> dict[str, Any]:
        """``{"label", "keyid", "alg", "created", "expires", "nonce", "covered"}`` of the
        verified signature; SignatureError otherwise. ``query`` is without its ``?``."""
    @property
    def required(self) -> list[str]: ...
    @property
    def max_age_s(self) -> int: ...
    @property
    def clock_skew_s(self) -> int: ...
    @property
    def label(self) -> str | None: ...
    @property
    def nonces_held(self) -> int: ...
    @property
    def nonces_evicted(self) -> int: ...

def verify_request(
    verifier: RequestVerifier,
    method: str,
    authority: str,
    path: str,
    query: str,
    headers: HeaderList,
    body: bytes,
    now_s: float | None = None,
    scheme: str = "https",
) -> dict[str, Any]:
    """``verifier.verify(...)``: raises SignatureError for a refused signature."""

def sign_request(
    key: Mapping[str, Any],
    method: str,
    authority: str,
    path: str,
    query: str,
    headers: HeaderList,
    body: bytes,
    now_s: float,
    nonce: str,
    label: str = "cellgate",
    ttl_s: int = 60,
    covered_headers: Sequence[str] | None = None,
    digest_sha512: bool = False,
    components: Sequence[str] | None = None,
    include_alg: bool = True,
) -> list[tuple[str, str]]:
    """Signs as the gateway does and returns the headers to add (``content-digest`` when there
    is a body, ``signature-input``, ``signature``). Covers ``components`` (default
    ``@method @authority @path @query``), the digest, then each of ``covered_headers`` present
    (default: the gateway's x-request-id, x-cell-id, x-customer-id, x-customer-tier,
    x-risk-level, x-step-up, traceparent). ``ttl_s=0`` sends no ``expires``; an empty nonce
    sends none. ValueError for a bad key (``key.<field>: ...``) or what cannot be signed."""
