"""Helpers of the audit tests: a gateway configuration with a trail, and reading a trail back
independently of cellgate's own tools (hashlib and cryptography as the oracles)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import demo_variant

ZERO_HASH = "0" * 64


def write_signing_key(path: Path) -> Ed25519PrivateKey:
    """A fresh Ed25519 key, written as a PEM PKCS#8 file."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return key


def audited_config(demo_config: Path, directory: Path, audit: str) -> Path:
    """The demo configuration in ``directory`` with ``[audit]`` (``audit`` holds its fields; a
    signing key ``audit.pem`` is made beside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    write_signing_key(directory / "audit.pem")
    text = (
        demo_config.read_text()
        + f'\n[audit]\ndirectory = "trail"\nsigning_key_file = "audit.pem"\n{audit}\n'
    )
    return demo_variant(demo_config, directory, text)


def read_chain(chain_dir: Path) -> list[tuple[str, int, bytes]]:
    """Every line of a chain's segments, in order: (segment name, line number, bytes)."""
    lines = []
    for segment in sorted(chain_dir.glob("*-*.jsonl")):
        for number, line in enumerate(segment.read_bytes().splitlines(), start=1):
            lines.append((segment.name, number, line))
    return lines


def records(trail: Path) -> list[dict]:
    """Every record of every chain."""
    found = []
    for chain_dir in sorted(trail.glob("chain-*")):
        found.extend(json.loads(line) for _, _, line in read_chain(chain_dir))
    return found


def check_trail(trail: Path) -> dict[str, int]:
    """Asserts every chain links and every digest is signed by the trail's key and matches its
    segment; returns counts."""
    public = serialization.load_pem_public_key((trail / "audit-key.pub").read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(raw).hexdigest()[:16]
    counts = {"records": 0, "digests": 0, "gaps": 0}
    for chain_dir in sorted(trail.glob("chain-*")):
        prev, seq = ZERO_HASH, 0
        hashes = {}
        for name, number, line in read_chain(chain_dir):
            record = json.loads(line)
            assert record["seq"] == seq + 1, f"{name}:{number}: seq {record['seq']} after {seq}"
            assert record["prev"] == prev, f"{name}:{number}: does not chain"
            seq, prev = record["seq"], hashlib.sha256(line).hexdigest()
            hashes[seq] = prev
            counts["records"] += 1
        digest_prev = ZERO_HASH
        digests = (chain_dir / "digests.jsonl").read_bytes().splitlines()
        for line in digests:
            entry = json.loads(line)
            head, _, signature = line.rpartition(b',"signature":"')
            public.verify(base64.b64decode(signature[:-2]), head + b"}")
            assert entry["key_id"] == key_id
            assert entry["prev_digest"] == digest_prev
            digest_prev = hashlib.sha256(line).hexdigest()
            counts["digests"] += 1
            if entry["kind"] != "records":
                continue
            segment = (chain_dir / entry["segment"]).read_bytes()[: entry["segment_bytes"]]
            assert hashlib.sha256(segment).hexdigest() == entry["segment_sha256"]
            if entry["count"]:
                assert hashes[entry["last_seq"]] == entry["last_hash"]
            if entry["gap"] is not None:
                counts["gaps"] += 1
    return counts
