"""Test material for the scheduler: due certificates, bulk revocations, checks of what came out."""

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import Engine, insert, update

from authority.protomfx import message_pb2
from hsm.authority import CertificateAuthority
from hsm.client_keys import ClientKey, generate_client_key
from repository import Certificate, NewCertificate, Store
from repository.schema import CRL_STATE_ID, crl_state, revoked_certs


def due_certificate(
    authority: CertificateAuthority,
    thing_id: str,
    *,
    key_type: str = "ec",
    bits: int = 256,
    lifetime: timedelta = timedelta(days=10),
    expires_in: timedelta = timedelta(days=1),
    key: ClientKey | None = None,
) -> NewCertificate:
    """A real certificate of ``lifetime`` issued long enough ago to expire in ``expires_in``
    (with ``key``, when given, instead of a new one: RSA keys are slow to make)."""
    now = datetime.now(UTC).replace(microsecond=0)
    issued = authority.issue(thing_id, key or generate_client_key(key_type, bits), lifetime,
                             now=now - lifetime + expires_in)
    return NewCertificate(
        serial=issued.serial_hex, thing_id=thing_id, certificate_pem=issued.certificate_pem,
        private_key_pem=issued.private_key_pem, private_key_type=issued.key_type,
        key_bits=issued.key_bits, not_before=issued.not_before, expires_at=issued.not_after,
        owner_id="owner-1",
    )


def issue_due(store: Store, authority: CertificateAuthority, thing_id: str,
              **options: Any) -> Certificate:
    """``due_certificate`` stored."""
    return store.save(due_certificate(authority, thing_id, **options))


def bulk_revocations(engine: Engine, count: int, *, batch: int = 50_000) -> int:
    """Append ``count`` revocations straight into revoked_certs (as committed revocations:
    COPY on PostgreSQL, batched INSERTs on SQLite); returns the last seq. The certificates
    themselves are not stored: the CRL needs only this. Also used by bench/crl_bench.py.
    """
    now = datetime.now(UTC).replace(microsecond=0)
    expires = now + timedelta(days=365)
    names = ("seq", "serial", "thing_id", "revoked_at", "reason", "expires_at", "serial_base")
    with engine.begin() as conn:
        first = conn.execute(
            update(crl_state).where(crl_state.c.id == CRL_STATE_ID)
            .values(revocation_seq=crl_state.c.revocation_seq + count, updated_at=now)
            .returning(crl_state.c.revocation_seq)).scalar_one() - count + 1

        def row(i: int) -> tuple[int, str, str, datetime, str, datetime, int]:
            seq = first + i
            return (seq, format((1 << 150) + seq, "x"), f"thing-{seq % 5000}",
                    now - timedelta(seconds=i % 86400),
                    "superseded" if i % 3 else "key_compromise", expires, 16)

        if engine.dialect.name == "postgresql":
            raw = conn.connection.dbapi_connection
            assert raw is not None
            with raw.cursor() as cursor, cursor.copy(  # type: ignore[attr-defined]
                f"COPY revoked_certs ({', '.join(names)}) FROM STDIN"
            ) as copy:
                for i in range(count):
                    copy.write_row(row(i))
        else:
            for start in range(0, count, batch):
                conn.execute(insert(revoked_certs),
                             [dict(zip(names, row(i), strict=True))
                              for i in range(start, min(start + batch, count))])
    return first + count - 1


def crl_serials(path: Path) -> set[int]:
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return {entry.serial_number for entry in crl}


def decode_event(data: bytes) -> tuple[Any, dict[str, Any]]:
    """The protomfx.Message envelope and its JSON payload."""
    message = message_pb2.Message()
    message.ParseFromString(data)
    return message, json.loads(message.payload)


def check_certificate(body: dict[str, Any], ca_pem_path: Path, workdir: Path) -> x509.Certificate:
    """The certificate of an event: verified by openssl against the CA for client auth,
    signed by the CA (cryptography), and matching the private key that came with it."""
    cert_path = workdir / f"{body['serial']}.pem"
    cert_path.write_text(body["client_cert"])
    result = subprocess.run(["openssl", "verify", "-CAfile", str(ca_pem_path), "-purpose",
                             "sslclient", str(cert_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    cert = x509.load_pem_x509_certificate(body["client_cert"].encode())
    ca = x509.load_pem_x509_certificate(body["issuing_ca"].encode())
    cert.verify_directly_issued_by(ca)
    assert format(cert.serial_number, "x") == body["serial"]
    key = serialization.load_pem_private_key(body["client_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, public) == \
        cert.public_key().public_bytes(serialization.Encoding.DER, public)
    assert body["ca_chain"] and body["ca_chain"][0] == body["issuing_ca"]
    return cert
