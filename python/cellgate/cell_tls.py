"""TLS to cells: what an operator writes under ``[cells.tls]`` compiled into the core's TLS
settings (rustls: the CA bundle is the only trust, never the system's roots).

The files are read here, relative to the configuration's directory, and their text goes to the
core, which checks the PEM material itself (``cellgate._core.check_cell_tls``): a CA file without
a certificate, a key that does not match its certificate, a server name that is no name. Every
problem comes back naming the cell and the field, with every other error of the configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cellgate import _core

__all__ = ["tls_settings"]

_FILES = (("ca_file", "ca_pem"), ("cert_file", "cert_pem"), ("key_file", "key_pem"))


def read_pem(base_dir: str, name: str, where: str, errors: list[str]) -> str | None:
    """The text of the PEM file ``name`` (relative to ``base_dir``), or None after adding why it
    cannot be read."""
    file = Path(base_dir, name)
    try:
        return file.read_text(encoding="ascii")
    except OSError as err:
        errors.append(f"{where}: cannot read {str(file)!r}: {err.strerror}")
    except UnicodeDecodeError:
        errors.append(f"{where}: {str(file)!r} is not a PEM text file")
    return None


def tls_settings(
    tls: Any, endpoint: str | None, path: str, base_dir: str, errors: list[str]
) -> dict[str, Any] | None:
    """The core's TLS settings for one cell (``tls``: its validated ``tls`` table or None, at
    ``path``), or None for a plain cell or after adding its errors. ``endpoint`` is the cell's
    (None when it is itself wrong: then only the files are checked)."""
    scheme = urlsplit(endpoint).scheme if endpoint is not None else None
    if tls is None:
        if scheme == "https":
            errors.append(f"{path}: required for an https:// endpoint (ca_file at least)")
        return None
    if scheme == "http":
        errors.append(f"{path}: given, but the endpoint is http://")
        return None
    before = len(errors)
    texts = {}
    for field, pem in _FILES:
        name = getattr(tls, field)
        if name is not None:
            texts[pem] = read_pem(base_dir, name, f"{path}.{field}", errors)
    if len(errors) > before or scheme != "https":
        return None
    settings = {**texts, "server_name": tls.server_name, "min_version": tls.min_version}
    host = urlsplit(endpoint).hostname or ""
    problems = _core.check_cell_tls(host=host, **settings)
    for problem in problems:
        # The default server name is the endpoint's host: its problem is the endpoint's.
        owner = path.rsplit(".", 1)[0] if problem.startswith("endpoint: ") else path
        errors.append(f"{owner}.{problem}")
    return None if problems else settings
