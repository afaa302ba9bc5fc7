"""Writes the TLS material the Rust unit tests read (rust/forward/testdata/tls/): test-only
certificates valid for a century, made with the demo's own issuing code. Run it again only to
replace them: python scripts/make_tls_fixtures.py"""

from __future__ import annotations

from pathlib import Path

from cellgate.demo.certs import CELL_NAMES, issue_ca, issue_leaf, write_key, write_pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

OUT = Path(__file__).resolve().parent.parent / "rust" / "forward" / "testdata" / "tls"
CENTURY = 36_500


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ca = issue_ca("cellgate test CA", CENTURY)
    other = issue_ca("cellgate other test CA", CENTURY)
    write_pem(OUT / "ca.pem", ca.certificate)
    write_pem(OUT / "other-ca.pem", other.certificate)
    write_pem(OUT / "bundle.pem", other.certificate, ca.certificate)
    cell, cell_key = issue_leaf(ca, "test cell", server=True, names=CELL_NAMES, valid_days=CENTURY)
    write_pem(OUT / "cell.pem", cell)
    write_key(OUT / "cell.key", cell_key)
    gateway, gateway_key = issue_leaf(ca, "test gateway", server=False, valid_days=CENTURY)
    write_pem(OUT / "gateway.pem", gateway)
    write_key(OUT / "gateway.key", gateway_key)
    write_key(OUT / "gateway-sec1.key", gateway_key, serialization.PrivateFormat.TraditionalOpenSSL)
    write_key(OUT / "stranger.key", ec.generate_private_key(ec.SECP256R1()))
    # An RSA client key in PKCS#1 form ("RSA PRIVATE KEY"), its certificate signed by the CA.
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_cert = _resign_for(ca, rsa_key)
    write_pem(OUT / "gateway-rsa.pem", rsa_cert)
    write_key(OUT / "gateway-rsa.key", rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)


def _resign_for(ca, key):
    """A client certificate for an RSA ``key`` (issue_leaf makes EC keys of its own)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test gateway rsa")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(ca.certificate.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


if __name__ == "__main__":
    main()
