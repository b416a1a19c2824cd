"""Certificate generation for TLS listeners, upstream test servers and the demo.

Wiregate terminates TLS from clients and opens TLS to upstream databases, so tests and the demo
need a CA plus leaf certificates on demand. Everything uses EC P-256 keys: small, fast to
generate and accepted by both Python's ``ssl`` module and PostgreSQL.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "generate_ca",
    "generate_self_signed",
    "generate_server_cert",
    "write_pair",
]

# Back-date validity so clock skew between hosts does not make a fresh cert "not yet valid";
# 825 days is the longest lifetime macOS/iOS accept for TLS server certificates.
_NOT_BEFORE_SKEW = _dt.timedelta(days=1)
_LIFETIME = _dt.timedelta(days=825)


def _new_key() -> ec.EllipticCurvePrivateKey:
    """P-256 rather than RSA: key generation is instant, which keeps test setup fast."""
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8, the form both OpenSSL consumers (Python, PostgreSQL) load directly."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _validity() -> tuple[_dt.datetime, _dt.datetime]:
    now = _dt.datetime.now(_dt.UTC)
    return now - _NOT_BEFORE_SKEW, now + _LIFETIME


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wiregate"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _require_hostnames(hostnames: list[str]) -> None:
    """A server cert without SANs is useless: modern verifiers ignore the CN."""
    if not hostnames or not all(hostnames):
        raise ValueError("at least one non-empty hostname or IP address is required")


def _subject_alt_names(hostnames: list[str]) -> x509.SubjectAlternativeName:
    """IP literals must be IPAddress SANs: verifiers never match an IP against a DNS name."""
    entries: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _leaf_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    hostnames: list[str],
) -> x509.CertificateBuilder:
    """Extensions shared by CA-signed and self-signed server certs."""
    not_before, not_after = _validity()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_subject_alt_names(hostnames), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def generate_ca(common_name: str = "Wiregate test CA") -> tuple[bytes, bytes]:
    """Create a CA so clients can verify servers with ``verify-full`` instead of trusting blindly.

    Returns ``(cert_pem, key_pem)``.
    """
    key = _new_key()
    name = _name(common_name)
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def generate_server_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, hostnames: list[str]
) -> tuple[bytes, bytes]:
    """Issue a server cert from ``generate_ca``'s CA, valid for every name/IP in ``hostnames``.

    The first hostname becomes the subject CN (informational only; verifiers use the SANs).
    Returns ``(cert_pem, key_pem)``.
    """
    _require_hostnames(hostnames)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("CA key must be an EC private key as produced by generate_ca()")
    key = _new_key()
    builder = _leaf_builder(_name(hostnames[0]), ca_cert.subject, key.public_key(), hostnames)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
    )
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def generate_self_signed(hostnames: list[str]) -> tuple[bytes, bytes]:
    """Self-signed server cert for the demo listener, where no CA is worth setting up.

    Returns ``(cert_pem, key_pem)``.
    """
    _require_hostnames(hostnames)
    key = _new_key()
    name = _name(hostnames[0])
    cert = _leaf_builder(name, name, key.public_key(), hostnames).sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def write_pair(directory: Path, stem: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write ``<stem>.crt`` and ``<stem>.key``; the key is 0600 because PostgreSQL refuses
    group/world-readable keys and it is a secret anyway.

    Returns ``(cert_path, key_path)``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert_pem)
    # Create with 0600 from the start so the key is never briefly readable by others.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    os.chmod(key_path, 0o600)  # O_CREAT's mode does not apply when the file already existed
    return cert_path, key_path
