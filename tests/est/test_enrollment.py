"""The EST routes in-process over a real token, SQLite and the identity provider: the error of
every bad request, the certificate from the TLS extension of the ASGI scope, the trusted-proxy
rule, the audit trail, and one re-enroll per certificate under concurrency. CSRs are made with
cryptography; the answers are read with cryptography and asn1crypto."""

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from ipaddress import ip_network
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from authority.wiring import Components
from hsm.authority import CertificateAuthority
from server.http.app import create_app
from tests.fixtures.identity import IdentityFixture
from tests.http.conftest import _build_components

HEADER = "X-SSL-Client-Cert"
PROXY = ("127.0.0.2", 40001)
ELSEWHERE = ("127.0.0.1", 40002)
EST = "/.well-known/est"


def _csr(key: Any, subject: str = "chosen-by-the-device") -> bytes:
    """A base64 DER request asking for a subject and a CA extension the service ignores."""
    request = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey)
                     else hashes.SHA256()))
    return base64.encodebytes(request.public_bytes(serialization.Encoding.DER))


def _p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificates(response: httpx.Response) -> list[x509.Certificate]:
    """The certificates of a certs-only answer (asn1crypto parses the CMS)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    info = cms.ContentInfo.load(base64.b64decode(response.content))
    signed = info["content"]
    assert info["content_type"].native == "signed_data"
    assert len(signed["signer_infos"]) == 0
    return [x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in signed["certificates"]]


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _with_tls(app: Any, chain: list[str]) -> Any:
    """The app behind a server that fills in the ASGI TLS extension."""
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            extensions = {**(scope.get("extensions") or {}), "tls": {"client_cert_chain": chain}}
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)
    return wrapped


@pytest.fixture(scope="module")
async def est_components(authority: CertificateAuthority, identity: IdentityFixture,
                         tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Components]:
    workdir = tmp_path_factory.mktemp("est-inprocess")
    built = _build_components(f"sqlite:///{workdir / 'certs.db'}", authority, identity, workdir)
    built.service.settings = replace(built.service.settings,
                                     trusted_proxies=(ip_network("127.0.0.2/32"),),
                                     client_cert_header=HEADER)
    yield built
    await built.things.close()
    built.service.close()


Connect = Callable[..., Any]


@pytest.fixture
async def connect(est_components: Components) -> AsyncIterator[Connect]:
    """``async with connect(client=(host, port), tls_chain=None) as http``; the things channel
    is connected first (a test before may have restarted the provider)."""
    await est_components.things.ready(timeout=15.0)
    def make(client: tuple[str, int] = ELSEWHERE, tls_chain: list[str] | None = None) -> Any:
        app = create_app(components=est_components)
        asgi: Any = _with_tls(app, tls_chain) if tls_chain is not None else app
        transport = httpx.ASGITransport(app=asgi, client=client)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver.local")
    yield make


def _basic(thing: Any, username: str | None = None) -> dict[str, str]:
    user = thing.id if username is None else username
    token = base64.b64encode(f"{user}:{thing.key}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/pkcs10"}


async def _enroll(connect: Connect, thing: Any, key: Any | None = None) -> x509.Certificate:
    async with connect() as http:
        response = await http.post(f"{EST}/simpleenroll", content=_csr(key or _p256()),
                                   headers=_basic(thing))
    [certificate] = _certificates(response)
    return certificate


async def test_enrolled_certificate_follows_the_profile(
        connect: Connect, identity: IdentityFixture, est_components: Components) -> None:
    thing = identity.thing_a1
    key = _p256()
    certificate = await _enroll(connect, thing, key)
    assert [(a.oid, a.value) for a in certificate.subject] == [(NameOID.COMMON_NAME, thing.id)]
    assert certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
        key.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    ca = x509.load_pem_x509_certificate(est_components.authority.ca_pem.encode())
    certificate.verify_directly_issued_by(ca)
    store = est_components.store
    record = store.get(format(certificate.serial_number, "x"))
    assert record.device_key and record.thing_id == thing.id
    assert store.get(record.serial, with_key=True).private_key_pem in (None, "")
    [audit] = [r for r in store.audit_records(thing_id=thing.id, limit=1000)
               if record.serial in r.issued]
    assert (audit.actor, audit.action) == (f"thing:{thing.id}", "est_enroll")
    assert audit.client == ELSEWHERE[0]


@pytest.mark.parametrize(("body", "message"), [
    (b"!!! not base64 !!!", "invalid csr"),
    (base64.encodebytes(b"\x30\x03\x02\x01\x00"), "invalid csr"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
     "invalid csr"),
    (b"", "invalid csr"),
])
async def test_bodies_that_are_not_a_request(connect: Connect, identity: IdentityFixture,
                                             body: bytes, message: str) -> None:
    async with connect() as http:
        response = await http.post(f"{EST}/simpleenroll", content=body,
                                   headers=_basic(identity.thing_a1))
    assert (response.status_code, response.text) == (400, message)
    assert response.headers["content-type"].startswith("text/plain")


def _tampered() -> bytes:
    der = bytearray(base64.b64decode(_csr(_p256())))
    der[-3] ^= 0x01  # inside the signature
    return base64.encodebytes(bytes(der))


@pytest.mark.parametrize(("make_body", "message"), [
    (_tampered, "invalid csr"),
    (lambda: _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
     "invalid key bits"),
    (lambda: _csr(ec.generate_private_key(ec.SECP224R1())), "invalid key bits"),
    (lambda: _csr(ed25519.Ed25519PrivateKey.generate()), "unsupported key type"),
])
async def test_requests_outside_the_policy(connect: Connect, identity: IdentityFixture,
                                           make_body: Callable[[], bytes], message: str) -> None:
    async with connect() as http:
        response = await http.post(f"{EST}/simpleenroll", content=make_body(),
                                   headers=_basic(identity.thing_a1))
    assert (response.status_code, response.text) == (400, message)


async def test_reenroll_from_the_tls_extension(connect: Connect, identity: IdentityFixture,
                                               est_components: Components) -> None:
    thing = identity.thing_b1
    held = await _enroll(connect, thing)
    async with connect(tls_chain=[_pem(held)]) as http:
        response = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()))
    [renewed] = _certificates(response)
    assert renewed.subject == held.subject
    store = est_components.store
    old, new = format(held.serial_number, "x"), format(renewed.serial_number, "x")
    assert store.get(new).thing_id == thing.id
    with pytest.raises(Exception, match="no active certificate"):
        store.get(old)
    [audit] = [r for r in store.audit_records(thing_id=thing.id, limit=1000) if new in r.issued]
    assert (audit.actor, audit.action, audit.revoked) == (f"thing:{thing.id}", "est_reenroll",
                                                         (old,))
    assert audit.reason == "superseded"


async def test_reenroll_of_an_expired_certificate_is_403(
        connect: Connect, identity: IdentityFixture, est_components: Components) -> None:
    thing = identity.thing_a2
    csr_pem = x509.load_der_x509_csr(base64.b64decode(_csr(_p256()))).public_bytes(
        serialization.Encoding.PEM).decode()
    async with connect() as http:
        issued = await http.post("/certs", json={"thing_id": thing.id, "csr": csr_pem,
                                                 "ttl": "1s"},
                                 headers={"Authorization": f"Bearer {identity.alice.token}"})
    assert issued.status_code == 201, issued.text
    await asyncio.sleep(2.1)
    async with connect(client=PROXY) as http:
        response = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                   headers={HEADER: quote(issued.json()["certificate"])})
    assert (response.status_code, response.text) == (403, "client certificate refused")


async def test_the_header_only_from_a_trusted_proxy(connect: Connect,
                                                   identity: IdentityFixture) -> None:
    held = await _enroll(connect, identity.thing_a1)
    escaped = quote(_pem(held), safe="")
    async with connect(client=ELSEWHERE) as http:
        ignored = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                  headers={HEADER: escaped})
    assert ignored.status_code == 401
    assert ignored.headers["www-authenticate"] == 'Basic realm="certs"'
    async with connect(client=PROXY) as http:
        twice = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                headers=[(HEADER, escaped), (HEADER, escaped)])
        garbage = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                  headers={HEADER: "not%20a%20certificate"})
        bad_body = await http.post(f"{EST}/simplereenroll", content=b"nope",
                                   headers={HEADER: escaped})
        accepted = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                   headers={HEADER: escaped})
    assert twice.status_code == 401
    assert (garbage.status_code, garbage.text) == (403, "client certificate refused")
    assert (bad_body.status_code, bad_body.text) == (400, "invalid csr")
    _certificates(accepted)


async def test_a_certificate_is_reenrolled_once(connect: Connect,
                                               identity: IdentityFixture) -> None:
    held = await _enroll(connect, identity.thing_a1)
    escaped = quote(_pem(held), safe="")

    async def attempt() -> int:
        async with connect(client=PROXY) as http:
            response = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                       headers={HEADER: escaped})
            return response.status_code

    outcomes = sorted(await asyncio.gather(*(attempt() for _ in range(6))))
    assert outcomes == [200, 403, 403, 403, 403, 403]


async def test_a_look_alike_of_an_active_certificate_is_refused(
        connect: Connect, identity: IdentityFixture) -> None:
    """Same serial and subject as an active certificate, signed by another key."""
    held = await _enroll(connect, identity.thing_a1)
    other = _p256()
    forged = (x509.CertificateBuilder().subject_name(held.subject).issuer_name(held.issuer)
              .public_key(other.public_key()).serial_number(held.serial_number)
              .not_valid_before(held.not_valid_before_utc)
              .not_valid_after(held.not_valid_after_utc).sign(other, hashes.SHA256()))
    async with connect(client=PROXY) as http:
        response = await http.post(f"{EST}/simplereenroll", content=_csr(_p256()),
                                   headers={HEADER: quote(_pem(forged), safe="")})
    assert (response.status_code, response.text) == (403, "client certificate refused")


async def test_identity_service_down_is_503(connect: Connect,
                                            identity_down: IdentityFixture) -> None:
    async with connect() as http:
        response = await http.post(f"{EST}/simpleenroll", content=_csr(_p256()),
                                   headers=_basic(identity_down.thing_a1))
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/plain")
