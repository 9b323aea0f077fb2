"""A private certificate authority and a server certificate for the sandbox, made once per state dir."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_quamotion.sandbox.state import write_private

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the sandbox's certificate files.

    :param ca_cert: the CA certificate clients must trust (``verify=``).
    :param server_cert: the server certificate (PEM), signed by the CA.
    :param server_key: the server certificate's private key (PEM).
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path


def ensure_tls(state_dir: Path) -> TlsFiles:
    """Return the state dir's certificate files, creating a CA and a server certificate on first use.

    :param state_dir: the sandbox's state directory.
    """
    files = TlsFiles(state_dir / CA_CERT, state_dir / SERVER_CERT, state_dir / SERVER_KEY)
    if all(p.exists() for p in (files.ca_cert, files.server_cert, files.server_key, state_dir / CA_KEY)):
        return files
    # Imported here: cryptography is only needed the first time a state dir is used.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Quamotion sandbox CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    state_dir.mkdir(parents=True, exist_ok=True)
    write_private(state_dir / CA_KEY, key_pem(ca_key))
    write_private(files.server_key, key_pem(server_key))
    write_private(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    # The CA certificate last: its presence (with the others) marks the set as complete.
    write_private(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return files
