"""Throwaway X.509 material for the TLS fault tests (FAULTS.md S16), made with `cryptography`.

Every certificate is generated in the test's temporary directory: a CA, a server certificate
for 127.0.0.1 signed by it (optionally without a SAN, or already expired), a client
certificate, and a second, unrelated CA to distrust the server with. Keys are EC P-256: fast
to generate, accepted by OpenSSL 3 at its default security level.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Issued(cert_path, key_path)


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates into `directory`."""

    def __init__(self, directory: Path, name: str = "flagsync-test-ca") -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.issued = _write(directory, name, self.certificate, self.key)

    @property
    def cert_path(self) -> Path:
        """The CA certificate (what a verifier trusts)."""
        return self.issued.cert

    def issue(
        self,
        stem: str,
        *,
        client: bool = False,
        san: bool = True,
        expired: bool = False,
    ) -> Issued:
        """A leaf certificate for 127.0.0.1 (server) or a client, written as `<stem>.crt/.key`.

        `san=False` leaves out the subjectAltName (the CN still says 127.0.0.1, which
        hostname checking ignores); `expired=True` makes it valid only in the past.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            not_before, not_after = (
                now - datetime.timedelta(days=30),
                now - datetime.timedelta(days=1),
            )
        else:
            not_before, not_after = (
                now - datetime.timedelta(hours=1),
                now + datetime.timedelta(days=1),
            )
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("flagsync-client" if client else str(_LOOPBACK)))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san and not client:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(_LOOPBACK)]), critical=False
            )
        return _write(self.directory, stem, builder.sign(self.key, hashes.SHA256()), key)
