"""Second opinions on what the service returned: openssl and pyca/cryptography."""

import subprocess
from pathlib import Path

from certs_sdk import Certificate
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key


def public_der(obj: object) -> bytes:
    return obj.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def assert_key_matches(cert: Certificate, key_pem: str | None = None) -> None:
    """The private key (given, or the record's) is the one the certificate certifies."""
    pem = key_pem if key_pem is not None else cert.private_key
    assert pem
    key = load_pem_private_key(pem.encode(), password=None)
    assert public_der(key.public_key()) == public_der(cert.x509().public_key())


def assert_openssl_verifies(cert_pem: str, ca_pem: str, workdir: Path) -> None:
    """`openssl verify -purpose sslclient` against the CA accepts the certificate."""
    ca_file = workdir / "verify-ca.pem"
    cert_file = workdir / "verify-cert.pem"
    ca_file.write_text(ca_pem)
    cert_file.write_text(cert_pem)
    result = subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), "-purpose",
                             "sslclient", str(cert_file)], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


def serial_of(cert_pem: str) -> str:
    return format(x509.load_pem_x509_certificate(cert_pem.encode()).serial_number, "x")
