"""Request-signing keys: what an operator writes under ``[cells.signing]`` compiled into the
core's signer settings (RFC 9421 HTTP Message Signatures, RFC 9530 Content-Digest).

An ``hmac-sha256`` key is a shared secret of at least 32 bytes (``secret``, ``secret_env`` or
``secret_b64``); an ``ed25519`` key is a private key (``private_key_file`` or
``private_key_pem`` holding a PEM ``PRIVATE KEY``, or an inline ``jwk`` with ``d``). The core
checks the key material itself; its errors come back naming the cell.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from cellgate.keys import PEM_BLOCK, b64url, secret

__all__ = [
    "HMAC_SIGNING_MIN_BYTES",
    "SIGNED_COMPONENTS",
    "SIGNED_IF_PRESENT",
    "pem_private_key",
    "signer_settings",
]

#: The shortest shared secret an hmac-sha256 signing key may have (RFC 9421 section 3.3.3).
HMAC_SIGNING_MIN_BYTES = 32

#: What every signature covers: the request line and the headers the gateway always sets.
SIGNED_COMPONENTS = (
    "@method",
    "@authority",
    "@path",
    "@query",
    "x-request-id",
    "x-cell-id",
    "x-customer-id",
    "x-customer-tier",
    "x-step-up",
)
#: Covered when the forwarded request has them (Content-Digest, whenever there is a body, too).
SIGNED_IF_PRESENT = (
    "x-risk-level",
    "x-forwarded-for",
    "traceparent",
    "idempotency-key",
    "content-type",
)


def pem_private_key(text: str, where: str) -> bytes:
    """The DER PKCS#8 of a PEM ``PRIVATE KEY``; ValueError says what it is instead."""
    match = PEM_BLOCK.search(text)
    if match is None:
        raise ValueError(f"{where}: no PEM block found")
    if match.group(1) != "PRIVATE KEY":
        raise ValueError(f"{where}: holds a {match.group(1)}, not a PKCS#8 PRIVATE KEY")
    try:
        return base64.b64decode("".join(match.group("body").split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the PEM body is not base64") from None


def _ed25519_key(signing: Any, base_dir: str) -> dict[str, Any]:
    given = [
        name
        for name in ("private_key_file", "private_key_pem", "jwk")
        if getattr(signing, name) is not None
    ]
    if len(given) != 1:
        raise ValueError(": give exactly one of private_key_file, private_key_pem or jwk")
    if signing.private_key_file is not None:
        file = Path(base_dir, signing.private_key_file)
        try:
            text = file.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or "not a PEM text file"
            raise ValueError(f".private_key_file: cannot read {str(file)!r}: {reason}") from None
        return {"pkcs8_b64": b64url(pem_private_key(text, ".private_key_file"))}
    if signing.private_key_pem is not None:
        return {"pkcs8_b64": b64url(pem_private_key(signing.private_key_pem, ".private_key_pem"))}
    jwk = signing.jwk
    for member in ("kty", "crv", "x", "d"):
        if not isinstance(jwk.get(member), str):
            raise ValueError(f".jwk.{member}: required, a string")
    return {"jwk": {member: jwk[member] for member in ("kty", "crv", "x", "d")}}


def signer_settings(
    signing: Any, path: str, base_dir: str, errors: list[str]
) -> dict[str, Any] | None:
    """The core's signer settings for one cell's ``signing`` table, or None after adding its
    errors (each naming ``path`` and the field)."""
    if signing.alg == "hmac-sha256":
        if signing.private_key_file or signing.private_key_pem or signing.jwk is not None:
            errors.append(f"{path}: hmac-sha256 takes a shared secret, not a private key")
            return None
        shared = secret(signing, path, errors)
        if shared is None:
            return None
        if len(shared) < HMAC_SIGNING_MIN_BYTES:
            errors.append(
                f"{path}.secret: an hmac-sha256 signing key needs at least"
                f" {HMAC_SIGNING_MIN_BYTES} bytes, got {len(shared)}"
            )
            return None
        key: dict[str, Any] = {"secret_b64": b64url(shared)}
    else:
        if signing.secret or signing.secret_env or signing.secret_b64:
            errors.append(f"{path}: ed25519 takes a private key, not a shared secret")
            return None
        try:
            key = _ed25519_key(signing, base_dir)
        except ValueError as err:
            errors.append(f"{path}{err}")
            return None
    return {
        "key": {"keyid": signing.keyid, "alg": signing.alg, **key},
        "label": signing.label,
        "ttl_s": signing.ttl_s,
        "digest_sha512": "sha-512" in signing.digest,
        "components": list(SIGNED_COMPONENTS),
        "headers": list(SIGNED_IF_PRESENT),
    }
