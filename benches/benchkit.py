"""What the hot-path benchmarks share: the demo configuration with every rule on and its quotas
raised (so a benchmark never runs into them), signing keys, and fresh tokens."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import jwt
import pytest
from cellgate import load_config
from cellgate.config import Config, config_from_table
from cellgate.demo import launch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

TOPOLOGY = Path(launch.__file__).parent / "topology.toml"
#: Far above what a benchmark reaches, so the quota is checked on every call but never bites.
UNBOUNDED = {"requests": 1_000_000_000, "period_s": 1, "burst": 1_000_000_000}
UNCACHED = 20_000
SIGNING_KEYS = {
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}


def bench_config(extra_keys: list[dict[str, Any]] = ()) -> Config:
    """The demo configuration with every rule on, its quotas raised, and ``extra_keys`` (tables
    of ``[[jwt.keys]]``), validated as any configuration is."""
    raw = tomllib.loads(TOPOLOGY.read_text(encoding="utf-8"))
    for tier in raw["tiers"].values():
        tier["rate_limit"] = UNBOUNDED
    raw["jwt"]["keys"] = [*raw["jwt"]["keys"], *extra_keys]
    return config_from_table(raw, TOPOLOGY.parent, str(TOPOLOGY))


def public_key_config(kid: str, alg: str) -> dict[str, Any]:
    """The ``[[jwt.keys]]`` table of the benchmark's ``alg`` verification key."""
    pem = (
        SIGNING_KEYS[alg]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {"kid": kid, "alg": alg, "public_key_pem": pem}


def token_count(request: pytest.FixtureRequest) -> int:
    """Enough fresh tokens to time with; a handful when benchmarks only run as checks."""
    timing = request.config.getoption("benchmark_enable") or not request.config.getoption(
        "benchmark_disable"
    )
    return UNCACHED if timing else 200


def signed_tokens(alg: str, kid: str, count: int) -> list[str]:
    """``count`` distinct tokens for ``c-retail-us`` signed with the benchmark's ``alg`` key."""
    demo = load_config(TOPOLOGY).jwt
    now = int(time.time())
    claims = {"sub": "c-retail-us", "iss": demo.issuer, "aud": demo.audience, "iat": now}
    claims["exp"] = now + 3600
    key = SIGNING_KEYS[alg]
    return [
        jwt.encode({**claims, "jti": str(i)}, key, algorithm=alg, headers={"kid": kid})
        for i in range(count)
    ]
