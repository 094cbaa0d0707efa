"""``certs serve`` with MF_CERTS_SERVER_CERT / MF_CERTS_SERVER_KEY: the API speaks HTTPS only.

The service runs as an operator runs it (tests/fixtures/serve.py). The TLS server certificate
comes from a throwaway CA made with cryptography, unrelated to the CA in the token.
"""

import ipaddress
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import serve_env, start_serve, stop_serve


@dataclass
class HttpsServer:
    port: int
    tls_ca: Path  # the throwaway CA that signed the server certificate
    signing_ca: Path  # the CA certificate of the key in the token

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30,
                            verify=ssl.create_default_context(cafile=str(self.tls_ca)))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("Throwaway TLS CA"))
        .issuer_name(_name("Throwaway TLS CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "tls-ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path = directory / "server.crt"
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path = directory / "server.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


@pytest.fixture
def https_server(tmp_path: Path, identity: IdentityFixture) -> Iterator[HttpsServer]:
    tls_ca, server_cert, server_key = _write_tls_material(tmp_path)
    # Two workers: each one loads the server certificate and serves TLS on its own socket.
    env = serve_env(tmp_path, identity, workers=2, extra={
        "MF_CERTS_SERVER_CERT": str(server_cert), "MF_CERTS_SERVER_KEY": str(server_key)})
    served = start_serve(env, tmp_path)
    try:
        yield HttpsServer(served.port, tls_ca, served.signing_ca)
    finally:
        stop_serve(served.process)


def test_health_over_https(https_server: HttpsServer) -> None:
    with https_server.client() as client:
        response = client.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "pass"
    assert body["checks"]["hsm"]["status"] == "pass"
    assert body["checks"]["database"]["status"] == "pass"
    assert body["checks"]["things"]["status"] == "pass"


def test_the_server_presents_the_configured_certificate(https_server: HttpsServer) -> None:
    """Only the throwaway CA vouches for the server: the system trust store does not."""
    with pytest.raises(httpx.ConnectError), \
            httpx.Client(timeout=10, verify=ssl.create_default_context()) as client:
        client.get(f"{https_server.base}/health")
    presented = ssl.get_server_certificate(("127.0.0.1", https_server.port))
    served = x509.load_pem_x509_certificate(presented.encode())
    tls_ca = x509.load_pem_x509_certificate(https_server.tls_ca.read_bytes())
    served.verify_directly_issued_by(tls_ca)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)


def test_plain_http_on_the_https_port_fails(https_server: HttpsServer) -> None:
    with pytest.raises(httpx.TransportError), httpx.Client(timeout=10) as client:
        client.get(f"http://127.0.0.1:{https_server.port}/health")
    # The refused plain request did not take the listener down.
    with https_server.client() as client:
        assert client.get("/health").status_code == 200


def test_issue_over_https(https_server: HttpsServer, identity: IdentityFixture,
                          tmp_path: Path) -> None:
    thing = identity.thing_a1
    with https_server.client() as client:
        response = client.post(
            "/certs", json={"thing_id": thing.id, "key_type": "ec"},
            headers={"Authorization": f"Bearer {identity.alice.token}"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["thing_id"] == thing.id
    leaf = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert format(leaf.serial_number, "x") == body["serial"]
    signing_ca = x509.load_pem_x509_certificate(https_server.signing_ca.read_bytes())
    leaf.verify_directly_issued_by(signing_ca)  # the CA in the token, not the TLS one
    leaf_path = tmp_path / "leaf.pem"
    leaf_path.write_text(body["certificate"])
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(https_server.signing_ca),
                             "-purpose", "sslclient", str(leaf_path)],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
