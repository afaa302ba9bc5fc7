"""Token verification keys: what an operator writes compiled into the core's key settings.

Each key is bound to one algorithm (RFC 8725 section 3.1). HS256/384/512 keys are shared secrets
(``secret``, ``secret_env`` or ``secret_b64``); RS*, PS*, ES256/384 and EdDSA keys are public keys
(``public_key_file`` or ``public_key_pem`` holding a PEM ``PUBLIC KEY``, or an inline ``jwk``), or
come from a JWKS file (RFC 7517 section 5) in which every key names its ``kid`` and ``alg``. The
core checks that each public key fits its algorithm; the errors it reports are mapped back here
to the place the key was written.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ALGORITHMS",
    "HMAC_MIN_KEY_BYTES",
    "Algorithm",
    "jwks_keys",
    "key_settings",
    "secret",
]

Algorithm = Literal[
    "HS256",
    "HS384",
    "HS512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "EdDSA",
]

#: Every algorithm a key may be bound to; ``none`` is not one of them.
ALGORITHMS: tuple[str, ...] = Algorithm.__args__  # type: ignore[attr-defined]

#: Minimum HMAC key length in bytes for each algorithm (RFC 7518 section 3.2).
HMAC_MIN_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

#: The JWK members that describe a public key (RFC 7518 section 6, RFC 8037 section 2).
PUBLIC_MEMBERS = ("kty", "n", "e", "crv", "x", "y")
#: Members that only a private key has; a verification key set must not carry them.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")

PEM_BLOCK = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)\s*-----END \1-----", re.S
)


def b64url(data: bytes) -> str:
    """base64url without padding, as JOSE writes binary values."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def secret(section: Any, path: str, errors: list[str]) -> bytes | None:
    """The shared secret a section gives in exactly one of its forms (``secret``, ``secret_env``
    and, where the section has it, ``secret_b64``), or None after adding its errors."""
    forms = [name for name in ("secret", "secret_env", "secret_b64") if hasattr(section, name)]
    if sum(getattr(section, name) is not None for name in forms) != 1:
        choices = f"{', '.join(forms[:-1])} or {forms[-1]}"
        errors.append(f"{path}: give exactly one of {choices}")
        return None
    if section.secret is not None:
        return section.secret.encode()
    encoded = getattr(section, "secret_b64", None)
    if encoded is not None:
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            errors.append(f"{path}.secret_b64: not base64url")
            return None
    value = os.environ.get(section.secret_env or "")
    if not value:
        state = "is not set" if value is None else "is empty"
        errors.append(f"{path}.secret_env: environment variable {section.secret_env} {state}")
        return None
    return value.encode()


def _pem_public_key(text: str, where: str) -> bytes:
    """The DER SubjectPublicKeyInfo of a PEM ``PUBLIC KEY``; ValueError says what it is instead."""
    match = PEM_BLOCK.search(text)
    if match is None:
        raise ValueError(f"{where}: no PEM block found")
    label = match.group(1)
    if label == "RSA PUBLIC KEY":
        raise ValueError(
            f"{where}: holds a PKCS#1 RSA PUBLIC KEY; give a PUBLIC KEY"
            " (openssl rsa -RSAPublicKey_in -pubout converts it)"
        )
    if "PRIVATE" in label:
        raise ValueError(f"{where}: holds a private key; give only the public key")
    if label != "PUBLIC KEY":
        raise ValueError(f"{where}: holds a {label}, not a PUBLIC KEY")
    try:
        return base64.b64decode("".join(match.group("body").split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: the PEM body is not base64") from None


def _public_key(key: Any, path: str, base_dir: str, errors: list[str]) -> dict[str, Any] | None:
    given = [n for n in ("public_key_file", "public_key_pem", "jwk") if getattr(key, n) is not None]
    if len(given) != 1:
        errors.append(f"{path}: give exactly one of public_key_file, public_key_pem or jwk")
        return None
    try:
        if key.public_key_file is not None:
            file = Path(base_dir, key.public_key_file)
            try:
                text = file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as err:
                reason = getattr(err, "strerror", None) or "not a PEM text file"
                raise ValueError(f"public_key_file: cannot read {str(file)!r}: {reason}") from None
            return {"spki_b64": b64url(_pem_public_key(text, "public_key_file"))}
        if key.public_key_pem is not None:
            return {"spki_b64": b64url(_pem_public_key(key.public_key_pem, "public_key_pem"))}
        return {"jwk": _jwk_public(key.jwk, "jwk")}
    except ValueError as err:
        errors.append(f"{path}.{err}")
        return None


def _jwk_public(jwk: dict[str, Any], where: str) -> dict[str, str]:
    private = [m for m in PRIVATE_MEMBERS if m in jwk]
    if private:
        raise ValueError(f"{where}: holds private key material ({', '.join(private)})")
    if not isinstance(jwk.get("kty"), str):
        raise ValueError(f"{where}.kty: required")
    for member in PUBLIC_MEMBERS:
        if member in jwk and not isinstance(jwk[member], str):
            raise ValueError(f"{where}.{member}: must be a string")
    return {m: jwk[m] for m in PUBLIC_MEMBERS if m in jwk}


def key_settings(key: Any, path: str, base_dir: str, errors: list[str]) -> dict[str, Any] | None:
    """The core's settings for one ``[[jwt.keys]]`` entry, or None after adding its errors."""
    is_hmac = key.alg in HMAC_MIN_KEY_BYTES
    if is_hmac:
        if key.public_key_file or key.public_key_pem or key.jwk is not None:
            errors.append(f"{path}: {key.alg} takes a shared secret, not a public key")
            return None
        shared = secret(key, path, errors)
        if shared is None:
            return None
        minimum = HMAC_MIN_KEY_BYTES[key.alg]
        if len(shared) < minimum:
            errors.append(
                f"{path}.secret: {key.alg} needs at least {minimum} bytes, got {len(shared)}"
            )
            return None
        return {"kid": key.kid, "alg": key.alg, "secret_b64": b64url(shared)}
    if key.secret or key.secret_env or key.secret_b64:
        errors.append(f"{path}: {key.alg} takes a public key, not a shared secret")
        return None
    public = _public_key(key, path, base_dir, errors)
    return None if public is None else {"kid": key.kid, "alg": key.alg, **public}


def jwks_keys(jwks_file: str, base_dir: str, errors: list[str]) -> list[tuple[dict[str, Any], str]]:
    """The keys of a JWKS file with the path naming each; every key must give ``kid`` and ``alg``
    (the algorithm is part of the key's identity here, never taken from a token)."""
    where = "jwt.jwks_file"
    file = Path(base_dir, jwks_file)
    try:
        document = json.loads(file.read_bytes())
    except OSError as err:
        errors.append(f"{where}: cannot read {str(file)!r}: {err.strerror}")
        return []
    except ValueError as err:
        errors.append(f"{where}: {str(file)!r} is not JSON: {err}")
        return []
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        errors.append(f'{where}: {str(file)!r} is not a JWKS (an object with a "keys" array)')
        return []
    found: list[tuple[dict[str, Any], str]] = []
    for i, jwk in enumerate(keys):
        path = f"{where} keys[{i}]"
        if not isinstance(jwk, dict):
            errors.append(f"{path}: must be a JSON object")
            continue
        kid, alg = jwk.get("kid"), jwk.get("alg")
        problems = []
        if not isinstance(kid, str) or not kid:
            problems.append(f"{path}.kid: required")
        if alg not in ALGORITHMS:
            problems.append(f"{path}.alg: must be one of {', '.join(ALGORITHMS)}, got {alg!r}")
        elif alg in HMAC_MIN_KEY_BYTES:
            problems.append(f"{path}.alg: {alg} keys are secrets; give them as secret_env")
        if jwk.get("use", "sig") != "sig":
            problems.append(f'{path}.use: must be "sig", got {jwk.get("use")!r}')
        try:
            public = _jwk_public(jwk, path)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            errors.extend(problems)
            continue
        found.append(({"kid": kid, "alg": alg, "jwk": public}, f"{path} (kid {kid!r})"))
    return found
