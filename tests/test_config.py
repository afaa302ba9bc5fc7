"""Malformed configurations: each bad field yields its own error, named by its dotted path.

Every case starts from the shipped demo topology (valid, as the first test proves), applies one
mutation, writes the result as TOML and loads it the way ``cellgate check-config`` does.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cellgate.demo
import pytest
from cellgate import cli
from cellgate.config import ConfigError, build_router, config_warnings, load_config
from cellgate.keys import ALGORITHMS

DEMO_DIR = Path(cellgate.demo.__file__).parent
TOPOLOGY = DEMO_DIR / "topology.toml"
CUSTOMERS = DEMO_DIR / "customers.jsonl"
UNSET_ENV = "CELLGATE_TEST_UNSET_SECRET"
EMPTY_ENV = "CELLGATE_TEST_EMPTY_SECRET"

Mutation = Callable[[dict[str, Any]], None]


def demo_raw() -> dict[str, Any]:
    """The demo topology as a TOML dict (its profiles source is relative: customers.jsonl)."""
    return tomllib.loads(TOPOLOGY.read_text(encoding="utf-8"))


def demo_profile_count() -> int:
    return len([line for line in CUSTOMERS.read_text().splitlines() if line.strip()])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)  # JSON numbers and strings are valid TOML
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(raw: dict[str, Any]) -> str:
    """``raw`` as TOML: one top-level key a line, tables and arrays inline."""
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in raw.items())


def write_config(directory: Path, raw: dict[str, Any], profiles: str | None = None) -> Path:
    """Writes ``raw`` as ``cellgate.toml`` with ``customers.jsonl`` (the demo's by default)."""
    (directory / "customers.jsonl").write_text(
        CUSTOMERS.read_text(encoding="utf-8") if profiles is None else profiles, encoding="utf-8"
    )
    path = directory / "cellgate.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    return path


def config_errors(path: Path) -> list[str]:
    """The errors ``check-config`` would list for ``path`` (loading, then compiling the router)."""
    with pytest.raises(ConfigError) as info:
        build_router(load_config(path))
    return info.value.errors


def _steps(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]


def _parent(raw: dict[str, Any], path: str) -> tuple[Any, str | int]:
    *head, last = _steps(path)
    for step in head:
        raw = raw[step]
    return raw, last


def put(path: str, value: Any) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        parent, last = _parent(raw, path)
        parent[last] = value

    mutate.__name__ = f"{path}={value!r}"
    return mutate


def drop(path: str) -> Mutation:
    def mutate(raw: dict[str, Any]) -> None:
        parent, last = _parent(raw, path)
        del parent[last]

    mutate.__name__ = f"no {path}"
    return mutate


def duplicate(path: str) -> Mutation:
    """Appends a copy of the array item at ``path`` to its array."""

    def mutate(raw: dict[str, Any]) -> None:
        parent, last = _parent(raw, path)
        parent.append(copy.deepcopy(parent[last]))

    mutate.__name__ = f"twice {path}"
    return mutate


UNKNOWN_CELL = (
    "known: breaker, capacity, certifications, connect_timeout_ms, encryption, endpoint,"
    " first_byte_timeout_ms, forward_bearer_token, id, max_in_flight, pool_idle_timeout_ms,"
    " region, request_timeout_ms, signed, signing, tier, tls"
)
UNKNOWN_TOP = (
    "known: admin, audit, breaker, cells, compliance, forward, health, jwt, paths, profiles, risk,"
    " server, state, tiers"
)
ENCRYPTION = "must be one of 'standard', 'enhanced', 'maximum'"
ALG = "must be one of " + ", ".join(repr(a) for a in ALGORITHMS)

CASES: list[Any] = [
    # cells
    (put("cells[2].capacity", 0), ["cells[2].capacity: must be > 0, got 0"]),
    (put("cells[2].capacity", -5), ["cells[2].capacity: must be > 0, got -5"]),
    (put("cells[2].capacity", "500"), ["cells[2].capacity: expected int, got str"]),
    (put("cells[2].capacity", 1.5), ["cells[2].capacity: expected int, got float"]),
    (put("cells[2].capacity", True), ["cells[2].capacity: expected int, got bool"]),
    (put("cells[0].encryption", "weak"), [f"cells[0].encryption: {ENCRYPTION}, got 'weak'"]),
    (
        put("cells[1].endpoint", "ftp://x"),
        ["cells[1].endpoint: must be http://host:port or https://host[:port], got 'ftp://x'"],
    ),
    (
        put("cells[1].endpoint", "http://127.0.0.1:9102/api?x=1"),
        ["cells[1].endpoint: must not carry a path, query or fragment"],
    ),
    (
        put("cells[1].endpoint", "http://127.0.0.1:9102#top"),
        ["cells[1].endpoint: must not carry a path, query or fragment"],
    ),
    (
        put("cells[1].endpoint", "http://127.0.0.1:99999"),
        ["cells[1].endpoint: port must be 1-65535, got 'http://127.0.0.1:99999'"],
    ),
    (
        put("cells[1].endpoint", "http://ops:pw@127.0.0.1:9102"),
        ["cells[1].endpoint: must not carry credentials"],
    ),
    (put("cells[1].id", "retail-us-east-1"), ["cells[1].id: duplicate cell id 'retail-us-east-1'"]),
    (
        put("cells[4].tier", "gold"),
        ["cells[4].tier: unknown tier 'gold' (tiers: corporate, hnw, retail)"],
    ),
    (
        put("tiers", {"retail": {}}),
        [
            *(
                f"cells[{i}].tier: unknown tier '{tier}' (tiers: retail)"
                for i, tier in [(2, "corporate"), (3, "hnw"), (5, "corporate"), (6, "hnw")]
            ),
            # The profiles are checked in the same pass, against the tiers there are.
            *(
                f'profiles (customers.jsonl): line {n}: tier: unknown tier "{tier}" (known: retail)'
                for n, tier in [(3, "corporate"), (4, "corporate"), (5, "hnw"), (6, "hnw")]
            ),
        ],
    ),
    (put("cells[0].signed", True), ["cells[0].signing: required when signed = true"]),
    (put("cells[3].signed", False), ["cells[3].signing: given, but signed = false"]),
    (
        put("cells[3].signing.alg", "rsa-pss-sha512"),
        ["cells[3].signing.alg: must be one of 'hmac-sha256', 'ed25519', got 'rsa-pss-sha512'"],
    ),
    (
        (put("cells[3].signing.alg", "hmac-sha256"), drop("cells[3].signing.jwk")),
        [
            "cells[3].signing: give exactly one of secret, secret_env or secret_b64",
        ],
    ),
    (
        (
            put("cells[3].signing.alg", "hmac-sha256"),
            drop("cells[3].signing.jwk"),
            put("cells[3].signing.secret", "too short"),
        ),
        ["cells[3].signing.secret: an hmac-sha256 signing key needs at least 32 bytes, got 9"],
    ),
    (
        put("cells[3].signing.secret", "x" * 40),
        ["cells[3].signing: ed25519 takes a private key, not a shared secret"],
    ),
    (
        put("cells[3].signing.jwk.x", "A" * 43),
        ["cells[3].signing.jwk: d and x are not one Ed25519 key pair"],
    ),
    (
        (drop("cells[3].signing.jwk"), put("cells[3].signing.private_key_pem", "junk")),
        ["cells[3].signing.private_key_pem: no PEM block found"],
    ),
    (
        put("cells[3].signing.ttl_s", 0),
        ["cells[3].signing.ttl_s: must be >= 1, got 0"],
    ),
    (put("cells[3].signed", "yes"), ["cells[3].signed: expected bool, got str"]),
    (
        put("cells[5].certifications", "GDPR"),
        ["cells[5].certifications: expected an array, got str"],
    ),
    (put("cells[5].certifications[1]", 7), ["cells[5].certifications[1]: expected str, got int"]),
    (put("cells[6].region", ""), ["cells[6].region: must have at least 1 character(s)"]),
    (drop("cells[6].endpoint"), ["cells[6].endpoint: required"]),
    (put("cells[1]", "retail"), ["cells[1]: expected a table, got str"]),
    (put("cells", []), ["cells: must have at least 1 item(s)"]),
    (drop("cells"), ["cells: required"]),
    # unknown fields, anywhere
    (put("cells[0].colour", "blue"), [f"cells[0].colour: unknown field ({UNKNOWN_CELL})"]),
    (put("colour", "blue"), [f"colour: unknown field ({UNKNOWN_TOP})"]),
    (put("base_dir", "/etc"), [f"base_dir: unknown field ({UNKNOWN_TOP})"]),
    (
        put("jwt.keys[0].use", "sig"),
        [
            "jwt.keys[0].use: unknown field (known: alg, jwk, kid, public_key_file,"
            " public_key_pem, secret, secret_b64, secret_env)"
        ],
    ),
    (
        put("tiers.retail.weight", 2),
        ["tiers.retail.weight: unknown field (known: placement, rate_limit)"],
    ),
    (
        put("tiers.retail.placement", "random"),
        ["tiers.retail.placement: must be one of 'least_loaded', 'sticky', got 'random'"],
    ),
    (put("tiers.retail", 1), ["tiers.retail: expected a table, got int"]),
    # jwt
    (put("jwt.keys", []), ["jwt.keys: give at least one key, or jwt.jwks_file"]),
    (put("jwt.keys", {"kid": "k"}), ["jwt.keys: expected an array, got table"]),
    (put("jwt.keys[0].alg", "none"), [f"jwt.keys[0].alg: {ALG}, got 'none'"]),
    (
        put("jwt.keys[0].alg", "RS256"),
        ["jwt.keys[0]: RS256 takes a public key, not a shared secret"],
    ),
    (put("jwt.keys[0].kid", ""), ["jwt.keys[0].kid: must have at least 1 character(s)"]),
    (
        put("jwt.keys[0].secret", "too-short"),
        ["jwt.keys[0].secret: HS256 needs at least 32 bytes, got 9"],
    ),
    (
        put("jwt.keys[0].alg", "HS512"),
        ["jwt.keys[0].secret: HS512 needs at least 64 bytes, got 52"],
    ),
    (
        put("jwt.keys[0].secret_env", EMPTY_ENV),
        ["jwt.keys[0]: give exactly one of secret, secret_env or secret_b64"],
    ),
    (
        drop("jwt.keys[0].secret"),
        ["jwt.keys[0]: give exactly one of secret, secret_env or secret_b64"],
    ),
    (
        (drop("jwt.keys[0].secret"), put("jwt.keys[0].secret_env", UNSET_ENV)),
        [f"jwt.keys[0].secret_env: environment variable {UNSET_ENV} is not set"],
    ),
    (
        (drop("jwt.keys[0].secret"), put("jwt.keys[0].secret_env", EMPTY_ENV)),
        [f"jwt.keys[0].secret_env: environment variable {EMPTY_ENV} is empty"],
    ),
    (
        (drop("jwt.keys[0].secret"), put("jwt.keys[0].secret_env", "")),
        ["jwt.keys[0].secret_env: must have at least 1 character(s)"],
    ),
    (
        duplicate("jwt.keys[0]"),
        ["jwt.keys[1].kid: duplicate kid 'demo-2026' (also jwt.keys[0])"],
    ),
    (put("jwt.leeway_s", -1), ["jwt.leeway_s: must be >= 0, got -1"]),
    (put("jwt.leeway_s", "30"), ["jwt.leeway_s: expected int, got str"]),
    (put("jwt.customer_claim", ""), ["jwt.customer_claim: must have at least 1 character(s)"]),
    (put("jwt.issuer", 5), ["jwt.issuer: expected str, got int"]),
    (put("jwt.audience", {"x": 1}), ["jwt.audience: expected str, got table"]),
    (put("jwt.require_exp", "no"), ["jwt.require_exp: expected bool, got str"]),
    (put("jwt.cache_ttl_s", 0), ["jwt.cache_ttl_s: must be > 0, got 0"]),
    (put("jwt.typ", ""), ["jwt.typ: must have at least 1 character(s)"]),
    (put("jwt.typ", ["at+jwt"]), ["jwt.typ: expected str, got array"]),
    (put("jwt", "hs256"), ["jwt: expected a table, got str"]),
    (drop("jwt"), ["jwt: required"]),
    # compliance: each rule asks for something some cell offers
    (
        put("compliance.EU_RESIDENT", {"region": "mars"}),
        [
            "compliance.EU_RESIDENT.region: no cell is in region 'mars'"
            " (regions: ap-southeast, eu-west, us-east)"
        ],
    ),
    (
        put("compliance.PII_RESTRICTED", {"certification": "HIPAA"}),
        [
            "compliance.PII_RESTRICTED.certification: no cell is certified 'HIPAA'"
            " (certifications: FedRAMP, GDPR, ISO27001, PCI-DSS, SOC2)"
        ],
    ),
    (
        put("compliance.VIP", {}),
        ["compliance.VIP: give a certification, a region or an encryption level"],
    ),
    (
        put("compliance.HIGH_RISK", {"encryption": "quantum"}),
        [f"compliance.HIGH_RISK.encryption: {ENCRYPTION}, got 'quantum'"],
    ),
    # a rule is not blamed for a cell's own mistake
    (put("cells[5].region", 7), ["cells[5].region: expected str, got int"]),
    # health, forward, admin, profiles
    (put("health.path", "health"), ["health.path: must start with /"]),
    (put("health.timeout_ms", 2000), ["health.timeout_ms: must not exceed health.interval_ms"]),
    (put("health.rise", 0), ["health.rise: must be > 0, got 0"]),
    (
        put("forward", {"connect_timeout_ms": 0}),
        ["forward.connect_timeout_ms: must be > 0, got 0"],
    ),
    (put("admin.secret", "short"), ["admin.secret: needs at least 32 bytes, got 5"]),
    (put("admin", {}), ["admin: give exactly one of secret or secret_env"]),
    (put("admin", 1), ["admin: expected a table, got int"]),
    (drop("profiles"), ["profiles: required"]),
    (put("profiles.source", ""), ["profiles.source: must have at least 1 character(s)"]),
    (put("profiles.source", "gone.jsonl"), ["profiles.source: no such file '{dir}/gone.jsonl'"]),
]


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UNSET_ENV, raising=False)
    monkeypatch.setenv(EMPTY_ENV, "")


def test_toml_writer_round_trips_the_demo_topology_which_is_valid(tmp_path: Path) -> None:
    raw = demo_raw()
    path = write_config(tmp_path, raw)
    assert tomllib.loads(path.read_text(encoding="utf-8")) == raw
    router = build_router(load_config(path))
    assert router.profile_count == demo_profile_count()


def _steps_of(mutation: Mutation | tuple[Mutation, ...]) -> tuple[Mutation, ...]:
    return mutation if isinstance(mutation, tuple) else (mutation,)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    CASES,
    ids=[", ".join(m.__name__ for m in _steps_of(mutation)) for mutation, _ in CASES],
)
def test_each_bad_field_yields_its_own_error_with_its_dotted_path(
    tmp_path: Path, mutation: Mutation | tuple[Mutation, ...], expected: list[str]
) -> None:
    raw = demo_raw()
    for mutate in _steps_of(mutation):
        mutate(raw)
    errors = config_errors(write_config(tmp_path, raw))
    assert errors == [e.format(dir=tmp_path) for e in expected]


def test_several_bad_fields_are_all_reported_at_once(tmp_path: Path) -> None:
    raw = demo_raw()
    for mutate in (
        put("cells[2].capacity", 0),
        put("cells[2].encryption", "weak"),
        put("cells[1].endpoint", "ftp://x"),
        put("cells[5].id", "retail-us-east-2"),
        put("jwt.leeway_s", -1),
        put("jwt.keys[0].secret", "too-short"),
        put("health.timeout_ms", 2000),
        put("colour", "blue"),
        put("profiles.source", "gone.jsonl"),
    ):
        mutate(raw)
    errors = config_errors(write_config(tmp_path, raw))
    assert sorted(errors) == sorted(
        [
            "cells[2].capacity: must be > 0, got 0",
            f"cells[2].encryption: {ENCRYPTION}, got 'weak'",
            "cells[1].endpoint: must be http://host:port or https://host[:port], got 'ftp://x'",
            "cells[5].id: duplicate cell id 'retail-us-east-2'",
            "jwt.leeway_s: must be >= 0, got -1",
            "jwt.keys[0].secret: HS256 needs at least 32 bytes, got 9",
            "health.timeout_ms: must not exceed health.interval_ms",
            f"colour: unknown field ({UNKNOWN_TOP})",
            f"profiles.source: no such file '{tmp_path}/gone.jsonl'",
        ]
    )


def test_structural_and_cross_reference_errors_are_all_reported_in_one_pass(
    tmp_path: Path,
) -> None:
    raw = demo_raw()
    for mutate in (
        # structural errors
        put("cells[2].capacity", 0),
        put("cells[1].encryption", "weak"),
        put("jwt.leeway_s", -1),
        put("health.rise", 0),
        put("tiers.retail.placement", "random"),
        # cross-references, in the same tables as the structural errors where possible
        put("cells[2].tier", "gold"),
        put("cells[1].endpoint", "ftp://x"),
        put("cells[4].id", "retail-us-east-1"),
        put("health.timeout_ms", 2000),
        put("compliance.EU_RESIDENT", {"region": "mars"}),
        put("compliance.PII_RESTRICTED", {"certification": "HIPAA"}),
    ):
        mutate(raw)
    profiles = "\n".join(
        [
            GOOD,
            GOOD.replace('"c-x"', '"c-y"').replace('"retail"', '"platinum"'),
            GOOD.replace('"c-x"', '"c-z"').replace('"us-east"', '"mars"'),
        ]
    )
    errors = config_errors(write_config(tmp_path, raw, profiles=profiles))
    assert sorted(errors) == sorted(
        [
            "cells[2].capacity: must be > 0, got 0",
            f"cells[1].encryption: {ENCRYPTION}, got 'weak'",
            "jwt.leeway_s: must be >= 0, got -1",
            "health.rise: must be > 0, got 0",
            "tiers.retail.placement: must be one of 'least_loaded', 'sticky', got 'random'",
            "cells[2].tier: unknown tier 'gold' (tiers: corporate, hnw, retail)",
            "cells[1].endpoint: must be http://host:port or https://host[:port], got 'ftp://x'",
            "cells[4].id: duplicate cell id 'retail-us-east-1'",
            "health.timeout_ms: must not exceed health.interval_ms",
            "compliance.EU_RESIDENT.region: no cell is in region 'mars'"
            " (regions: ap-southeast, eu-west, us-east)",
            "compliance.PII_RESTRICTED.certification: no cell is certified 'HIPAA'"
            " (certifications: FedRAMP, GDPR, ISO27001, PCI-DSS, SOC2)",
            'profiles (customers.jsonl): line 2: tier: unknown tier "platinum"'
            " (known: corporate, hnw, retail)",
            'profiles (customers.jsonl): line 3: region: no cell serves region "mars"'
            " (regions: us-east, eu-west, ap-southeast)",
        ]
    )


def test_a_valid_configuration_warns_of_a_missing_issuer_or_audience(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, demo_raw()))
    assert config_warnings(config) == []
    raw = demo_raw()
    del raw["jwt"]["issuer"]
    assert [w.split(":")[0] for w in config_warnings(load_config(write_config(tmp_path, raw)))] == [
        "jwt.issuer"
    ]
    del raw["jwt"]["audience"]
    warnings = config_warnings(load_config(write_config(tmp_path, raw)))
    assert [w.split(":")[0] for w in warnings] == ["jwt.issuer", "jwt.audience"]
    assert "RFC 8725 section 3.8" in warnings[0] and "RFC 8725 section 3.9" in warnings[1]


def test_check_config_prints_a_warning_line_for_each_and_still_exits_0(tmp_path: Path) -> None:
    raw = demo_raw()
    del raw["jwt"]["issuer"], raw["jwt"]["audience"]
    path = write_config(tmp_path, raw)
    result = check_config(path, tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"{path}: ok: ")
    assert result.stderr.splitlines() == [
        f"warning: {w}" for w in config_warnings(load_config(path))
    ]


def test_serve_prints_the_warnings_before_the_server_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = demo_raw()
    del raw["jwt"]["audience"]
    path = write_config(tmp_path, raw)
    started: list[str] = []

    def fake_serve(config_path: Path, config: Any, args: Any) -> int:
        started.append(capsys.readouterr().err)
        return 0

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main(["serve", "--config", str(path)]) == 0
    (before_start,) = started
    assert before_start.splitlines() == [
        f"warning: {w}" for w in config_warnings(load_config(path))
    ]
    assert before_start.startswith("warning: jwt.audience: not set")


GOOD = '{"customer_id": "c-x", "tier": "retail", "region": "us-east"}'
FIRST = GOOD.replace('"c-x"', '"c-first"')
LAST = GOOD.replace('"c-x"', '"c-last"')


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "key must be a string at line 1 column 2"),
        ("42", "a profile is a JSON object"),
        ('["c-y", "retail", "us-east"]', "a profile is a JSON object"),
        (FIRST, 'customer_id: "c-first" is already given on line 1'),
        (
            GOOD.replace('"retail"', '"gold"'),
            'tier: unknown tier "gold" (known: corporate, hnw, retail)',
        ),
        (
            GOOD.replace('"us-east"', '"mars"'),
            'region: no cell serves region "mars" (regions: us-east, eu-west, ap-southeast)',
        ),
        (GOOD.replace("}", ', "risk": 2}'), "risk: must be between 0 and 1, got 2"),
        (GOOD.replace('"c-x"', '""'), "customer_id: must not be empty"),
        (GOOD.replace(', "region": "us-east"', ""), "missing field `region` at line 1 column 40"),
    ],
    ids=[
        *["not-json", "not-object", "json-array", "duplicate-id", "tier", "region", "risk"],
        *["empty-id", "no-region"],
    ],
)
def test_a_bad_profile_line_is_reported_with_its_line_number(
    tmp_path: Path, line: str, expected: str
) -> None:
    # A blank line is skipped but still counted: the bad line is line 3 of the file.
    path = write_config(tmp_path, demo_raw(), profiles=f"{FIRST}\n\n{line}\n{LAST}\n")
    assert config_errors(path) == [f"profiles (customers.jsonl): line 3: {expected}"]


def test_every_bad_profile_line_is_reported(tmp_path: Path) -> None:
    lines = [GOOD, "{not json", GOOD.replace("c-x", "c-y"), GOOD.replace('"retail"', '"gold"')]
    path = write_config(tmp_path, demo_raw(), profiles="\n".join(lines) + "\n")
    line_number = re.compile(r"profiles \(customers.jsonl\): line (\d+): ")
    numbers = [line_number.match(e) for e in config_errors(path)]
    assert [m and m[1] for m in numbers] == ["2", "4"]


def check_config(path: Path | str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cellgate.cli", "check-config", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_accepts_the_demo_topology_with_a_one_line_summary(tmp_path: Path) -> None:
    result = check_config(TOPOLOGY, tmp_path)
    raw = demo_raw()
    summary = (
        f"{TOPOLOGY}: ok: {len(raw['cells'])} cells, {len(raw['tiers'])} tiers, "
        f"{demo_profile_count()} profiles, {len(raw['jwt']['keys'])} JWT keys\n"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, summary, "")


def test_check_config_lists_every_error_on_its_own_line_and_exits_2(tmp_path: Path) -> None:
    raw = demo_raw()
    for mutate in (put("cells[2].capacity", 0), put("jwt.leeway_s", -1), put("colour", 1)):
        mutate(raw)
    path = write_config(tmp_path, raw)
    result = check_config(path, tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"{path}: 3 configuration error(s):",
        f"  colour: unknown field ({UNKNOWN_TOP})",
        "  jwt.leeway_s: must be >= 0, got -1",
        "  cells[2].capacity: must be > 0, got 0",
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "[jwt\nissuer = 1\n",
            "toml: Expected ']' at the end of a table declaration (at line 1, column 5)",
        ),
        ("a = 1\na = 2\n", "toml: Cannot overwrite a value (at line 2, column 6)"),
        (b"a = '\xff'\n", "configuration is not UTF-8"),
        (None, "cannot read configuration: No such file or directory"),
    ],
    ids=["not-toml", "duplicate-key", "not-utf8", "missing-file"],
)
def test_check_config_refuses_an_unreadable_file_with_a_clear_message_and_exits_2(
    tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "cellgate.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    result = check_config(path, tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [f"{path}: 1 configuration error(s):", f"  {expected}"]
