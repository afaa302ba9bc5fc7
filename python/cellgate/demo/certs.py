"""The demo's throwaway certificate authority: a CA, the mTLS cell's server certificate and the
gateway's client certificate, made with ``cryptography`` on the demo's first start, in the demo's
own directory, and reused on later starts.

Nothing here is fit for anything but the demo on loopback: the CA is made on this machine, its
key lies beside it unencrypted, and its name constraints let it vouch only for ``localhost``,
``127.0.0.0/8`` and ``::1``, so trusting it by mistake elsewhere lends it no other name::

    tls = demo_certificates(Path("demo/tls"))   # made once, then the same files
    tls.ca_file, tls.cell_cert_file, tls.cell_key_file, tls.gateway_cert_file, tls.gateway_key_file
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEMO_VALID_DAYS",
    "DemoCertificates",
    "Issuer",
    "demo_certificates",
    "issue_ca",
    "issue_leaf",
    "write_key",
    "write_pem",
]

#: How long the demo's certificates are valid; they are made again when less than a day is left.
DEMO_VALID_DAYS = 30

#: What the demo CA may vouch for: loopback names only.
LOOPBACK_NAMES: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
    x509.IPAddress(ipaddress.ip_network("::1/128")),
)

#: The names the mTLS cell's certificate carries.
CELL_NAMES: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)

_RENEW_BEFORE = datetime.timedelta(days=1)
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Issuer:
    """A certificate authority that can sign: its certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def issue_ca(
    common_name: str,
    valid_days: int = DEMO_VALID_DAYS,
    permitted: tuple[x509.GeneralName, ...] | None = LOOPBACK_NAMES,
) -> Issuer:
    """A new self-signed CA (ECDSA P-256) that may sign end-entity certificates only (path
    length 0), limited to the ``permitted`` names when given."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if permitted:
        constraints = x509.NameConstraints(
            permitted_subtrees=list(permitted), excluded_subtrees=None
        )
        builder = builder.add_extension(constraints, critical=True)
    return Issuer(builder.sign(key, hashes.SHA256()), key)


def issue_leaf(
    issuer: Issuer,
    common_name: str,
    *,
    server: bool,
    names: tuple[x509.GeneralName, ...] = (),
    valid_days: int = DEMO_VALID_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new end-entity certificate and its key (ECDSA P-256) signed by ``issuer``: for a server
    (``serverAuth``, with ``names`` as its subject alternative names) or a client
    (``clientAuth``)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(days=valid_days), _not_after(issuer)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(issuer.key, hashes.SHA256()), key


def _not_after(issuer: Issuer) -> datetime.datetime:
    return issuer.certificate.not_valid_after_utc


def write_pem(path: Path, *certificates: x509.Certificate) -> None:
    """Writes ``certificates`` to ``path`` as PEM, replacing it whole (written aside, then
    renamed)."""
    text = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    _write_replacing(path, text, 0o644)


def write_key(
    path: Path,
    key: ec.EllipticCurvePrivateKey,
    form: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
) -> None:
    """Writes ``key`` unencrypted to ``path`` (mode 0600) as PEM, PKCS#8 unless told otherwise."""
    text = key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())
    _write_replacing(path, text, 0o600)


def _write_replacing(path: Path, data: bytes, mode: int) -> None:
    aside = path.with_name(f".{path.name}.new")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(aside, path)


@dataclass(frozen=True)
class DemoCertificates:
    """Where the demo's certificates are: the CA, the mTLS cell's server certificate and key,
    and the gateway's client certificate and key (keys PKCS#8 PEM, as granian wants them)."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cell_cert_file(self) -> Path:
        return self.directory / "cell.pem"

    @property
    def cell_key_file(self) -> Path:
        return self.directory / "cell.key"

    @property
    def gateway_cert_file(self) -> Path:
        return self.directory / "gateway.pem"

    @property
    def gateway_key_file(self) -> Path:
        return self.directory / "gateway.key"

    def files(self) -> tuple[Path, ...]:
        """Every file, the CA's first."""
        return (
            self.ca_file,
            self.cell_cert_file,
            self.cell_key_file,
            self.gateway_cert_file,
            self.gateway_key_file,
        )

    def usable(self) -> bool:
        """Whether every file is there, every certificate was signed by this CA (not another
        run's), and none expires within a day."""
        try:
            ca = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            leaves = [
                x509.load_pem_x509_certificate(path.read_bytes())
                for path in (self.cell_cert_file, self.gateway_cert_file)
            ]
            keys = [
                serialization.load_pem_private_key(path.read_bytes(), password=None)
                for path in (self.cell_key_file, self.gateway_key_file)
            ]
        except (OSError, ValueError, TypeError):
            return False
        deadline = _now() + _RENEW_BEFORE
        for leaf, key in zip(leaves, keys, strict=True):
            try:
                leaf.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                return False
            if leaf.public_key() != key.public_key() or leaf.not_valid_after_utc < deadline:
                return False
        return ca.not_valid_after_utc >= deadline


def demo_certificates(directory: Path, valid_days: int = DEMO_VALID_DAYS) -> DemoCertificates:
    """The demo's certificates in ``directory``: those already there while they are whole and
    valid for another day, else a new CA and both certificates, all made at once. The CA's key
    is not kept (no later certificate is ever signed with it)."""
    certificates = DemoCertificates(Path(directory))
    if certificates.usable():
        return certificates
    certificates.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = issue_ca("cellgate demo CA (throwaway, loopback only)", valid_days)
    cell, cell_key = issue_leaf(ca, "cellgate demo cell", server=True, names=CELL_NAMES)
    gateway, gateway_key = issue_leaf(ca, "cellgate demo gateway", server=False)
    write_key(certificates.cell_key_file, cell_key)
    write_pem(certificates.cell_cert_file, cell)
    write_key(certificates.gateway_key_file, gateway_key)
    write_pem(certificates.gateway_cert_file, gateway)
    # Last: the CA file is what marks a whole set (usable() checks every leaf against it).
    write_pem(certificates.ca_file, ca.certificate)
    return certificates
