"""TLS between the clients and the provider, with certificates made here with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authority.identity import AuthClient, IdentityUnavailable, ThingsClient
from tests.fixtures.identity import IdentityFixture, ProviderProcess, start_provider_process


def self_signed(directory: Path, name: str, sans: list[x509.GeneralName]) -> tuple[Path, Path]:
    """A self-signed P-256 certificate (its own trust anchor) and key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class TLSProvider:
    process: ProviderProcess
    cert: Path
    other_cert: Path  # a different self-signed certificate, trusted by nobody here


@pytest.fixture(scope="module")
def tls_provider(
    identity: IdentityFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TLSProvider]:
    workdir = tmp_path_factory.mktemp("identity-tls")
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("identity.test"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert, key = self_signed(workdir, "provider", sans)
    other, _ = self_signed(workdir, "other", sans)
    process = start_provider_process(identity.file, workdir, tls_cert=cert, tls_key=key)
    try:
        yield TLSProvider(process, cert, other)
    finally:
        process.stop()


async def test_tls_round_trip(tls_provider: TLSProvider, identity: IdentityFixture) -> None:
    p = tls_provider.process
    async with (
        ThingsClient(p.things_url, ca_certs=tls_provider.cert) as things,
        AuthClient(p.auth_url, ca_certs=str(tls_provider.cert)) as auth,
    ):
        assert things.tls and auth.tls
        await things.can_access(identity.alice.token, identity.thing_a1.id, "editor")
        assert await things.identify_thing(identity.thing_b1.key) == identity.thing_b1.id
        assert await things.thing_key(identity.thing_a2.id) == identity.thing_a2.key
        assert (await auth.identify_user(identity.bob.token)).email == identity.bob.email


async def test_tls_by_host_name_and_name_override(
    tls_provider: TLSProvider, identity: IdentityFixture
) -> None:
    port = tls_provider.process.things_port
    async with ThingsClient(f"localhost:{port}", tls=True, ca_certs=tls_provider.cert) as c:
        assert await c.identify_thing(identity.thing_a1.key) == identity.thing_a1.id
    async with ThingsClient(
        f"127.0.0.1:{port}", ca_certs=tls_provider.cert, tls_server_name="identity.test"
    ) as c:
        assert await c.identify_thing(identity.thing_a1.key) == identity.thing_a1.id
    async with ThingsClient(
        f"127.0.0.1:{port}", ca_certs=tls_provider.cert, tls_server_name="wrong.test"
    ) as c:
        with pytest.raises(IdentityUnavailable):
            await c.identify_thing(identity.thing_a1.key)


async def test_untrusted_server_certificate(
    tls_provider: TLSProvider, identity: IdentityFixture
) -> None:
    async with ThingsClient(tls_provider.process.things_url, ca_certs=tls_provider.other_cert) as c:
        with pytest.raises(IdentityUnavailable) as info:
            await c.can_access(identity.alice.token, identity.thing_a1.id, "viewer")
    assert str(info.value) == "things service unavailable"
    # tls=True without ca_certs trusts the system roots, which do not include ours.
    async with AuthClient(tls_provider.process.auth_url, tls=True) as a:
        with pytest.raises(IdentityUnavailable):
            await a.identify_user(identity.alice.token)


async def test_plaintext_client_against_tls_server(
    tls_provider: TLSProvider, identity: IdentityFixture
) -> None:
    async with ThingsClient(tls_provider.process.things_url, timeout=1.0) as c:
        assert not c.tls
        with pytest.raises(IdentityUnavailable):
            await c.identify_thing(identity.thing_a1.key)


async def test_tls_client_against_plaintext_server(
    tls_provider: TLSProvider, identity: IdentityFixture
) -> None:
    async with ThingsClient(identity.things_url, ca_certs=tls_provider.cert, timeout=1.0) as c:
        with pytest.raises(IdentityUnavailable):
            await c.identify_thing(identity.thing_a1.key)


def test_tls_false_ignores_ca_certs(tls_provider: TLSProvider) -> None:
    """MF_CERTS_CLIENT_TLS=false wins over MF_CERTS_CA_CERTS, as in the Go service."""
    assert ThingsClient("localhost:8183", tls=False, ca_certs=tls_provider.cert).tls is False


def test_bad_ca_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ThingsClient("localhost:8183", ca_certs=tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        AuthClient("localhost:8181", ca_certs=junk)
