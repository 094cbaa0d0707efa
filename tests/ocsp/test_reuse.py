"""The responder's use case against a real token and both store backends: requests answered
together each get their own certificate's answer; a response without a nonce is reused only
while the store says the same and within the second of its thisUpdate; one with a nonce is
signed anew each time."""

import asyncio
import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from sqlalchemy import insert

from authority.ocsp import OcspService
from hsm.authority import CertificateAuthority
from repository import RevocationReason, Store, create_engine_for, migrate
from repository.schema import certs
from tests.repository.helpers import SoftwareSealer

NOW = datetime.now(UTC).replace(microsecond=0)
SERIALS = [0x0C5E0 + n for n in range(12)]
VALIDITY = timedelta(hours=1)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    migrate(db_url)
    engine = create_engine_for(db_url)
    with engine.begin() as conn:
        conn.execute(insert(certs), [{
            "serial": format(serial, "x"), "thing_id": "thing",
            "expires_at": NOW + timedelta(days=1), "client_cert": "PEM",
            "private_key_type": "ec", "key_bits": 256, "downloaded": False,
            "created_at": NOW, "serial_base": 16,
        } for serial in SERIALS])
    yield Store(engine, SoftwareSealer())
    engine.dispose()


def _service(authority: CertificateAuthority, store: Store, reuse: bool = True
             ) -> OcspService:
    return OcspService(authority, store, VALIDITY, threads=4, reuse=reuse)


def _next_second() -> None:
    """Sleep until a new second of the clock has just begun."""
    time.sleep(1 - time.time() % 1 + 0.01)


def _request(authority: CertificateAuthority, serial: int, nonce: bytes | None = None) -> bytes:
    ca = x509.load_der_x509_certificate(authority.ca_certificate.dump())
    key_bits = authority.ca_certificate.public_key["public_key"].contents[1:]
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        hashlib.sha256(ca.subject.public_bytes()).digest(), hashlib.sha256(key_bits).digest(),
        serial, hashes.SHA256())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _read(authority: CertificateAuthority, answer: bytes) -> ocsp.OCSPResponse:
    """Parsed by cryptography, its signature checked against the CA's key."""
    response = ocsp.load_der_ocsp_response(answer)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    key = x509.load_der_x509_certificate(authority.ca_certificate.dump()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    key.verify(response.signature, response.tbs_response_bytes,
               ec.ECDSA(response.signature_hash_algorithm))
    return response


def test_requests_answered_together_get_their_own_answers(authority: CertificateAuthority,
                                                          store: Store) -> None:
    store.revoke(format(SERIALS[1], "x"), reason=RevocationReason.KEY_COMPROMISE)
    service = _service(authority, store)
    asked = [*SERIALS, 0xBAD5E41] * 3
    nonces = [bytes([n]) * 16 if n % 2 else None for n in range(len(asked))]

    async def all_at_once() -> list[bytes]:
        return await asyncio.gather(*(service.answer(_request(authority, serial, nonce))
                                      for serial, nonce in zip(asked, nonces, strict=True)))

    try:
        answers = asyncio.run(all_at_once())
    finally:
        service.close()
    expected = {SERIALS[1]: ocsp.OCSPCertStatus.REVOKED, 0xBAD5E41: ocsp.OCSPCertStatus.UNKNOWN}
    for serial, nonce, answer in zip(asked, nonces, answers, strict=True):
        response = _read(authority, answer)
        assert response.serial_number == serial
        assert response.certificate_status == expected.get(serial, ocsp.OCSPCertStatus.GOOD)
        echoed = [e.value.nonce for e in response.extensions
                  if isinstance(e.value, x509.OCSPNonce)]
        assert echoed == ([nonce] if nonce else [])


def test_reused_until_the_store_says_otherwise(authority: CertificateAuthority,
                                              store: Store) -> None:
    service = _service(authority, store)
    plain = _request(authority, SERIALS[0])
    try:
        _next_second()
        first, second = (asyncio.run(service.answer(plain)) for _ in range(2))
        assert first == second
        assert _read(authority, first).certificate_status == ocsp.OCSPCertStatus.GOOD
        # ECDSA signatures are randomized: equal bytes would mean a reused response.
        with_nonce = _request(authority, SERIALS[0], b"n" * 16)
        assert asyncio.run(service.answer(with_nonce)) != asyncio.run(service.answer(with_nonce))
        store.revoke(format(SERIALS[0], "x"), reason=RevocationReason.SUPERSEDED)
        revoked = _read(authority, asyncio.run(service.answer(plain)))
        assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
        assert revoked.revocation_reason == x509.ReasonFlags.superseded
    finally:
        service.close()


def test_not_reused_in_the_next_second_or_when_reuse_is_off(
        authority: CertificateAuthority, store: Store) -> None:
    plain = _request(authority, SERIALS[2])
    off = _service(authority, store, reuse=False)
    reusing = _service(authority, store)
    try:
        _next_second()
        assert asyncio.run(off.answer(plain)) != asyncio.run(off.answer(plain))
        first = _read(authority, asyncio.run(reusing.answer(plain)))
        _next_second()
        later = _read(authority, asyncio.run(reusing.answer(plain)))
        assert later.signature != first.signature
        assert later.this_update_utc > first.this_update_utc
    finally:
        off.close()
        reusing.close()
