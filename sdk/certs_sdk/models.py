"""Typed results: frozen dataclasses built from the service's JSON bodies (SPEC section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp of the API as an aware UTC datetime."""
    return datetime.fromisoformat(text).astimezone(UTC)


def format_time(moment: datetime) -> str:
    """UTC, second precision, as the API writes times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Certificate:
    """A certificate record. `private_key` is the PEM key on issue, renew, rotate and the first
    download, `""` for a key the device holds itself (CSR), None where the route never returns
    it (view, lists). `downloaded` is the body's value on view and lists; on issue, renew and
    rotate the new record is not downloaded yet (False), on download it now is (True)."""

    serial: str
    thing_id: str
    certificate: str
    issuing_ca: str
    ca_chain: tuple[str, ...]
    private_key: str | None = field(repr=False)
    private_key_type: str
    key_bits: int
    expires_at: datetime
    downloaded: bool

    @property
    def key_type(self) -> str:
        return self.private_key_type

    def x509(self) -> x509.Certificate:
        """The certificate parsed by pyca/cryptography."""
        return x509.load_pem_x509_certificate(self.certificate.encode())

    def chain_pem(self) -> str:
        """The CA chain as one PEM text, issuing CA first."""
        return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in self.ca_chain)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, downloaded: bool | None = None) -> Certificate:
        """From an issue body (give `downloaded`) or a view body (which carries it)."""
        private_key = body.get("private_key")
        return cls(
            serial=str(body["serial"]),
            thing_id=str(body["thing_id"]),
            certificate=str(body["certificate"]),
            issuing_ca=str(body["issuing_ca"]),
            ca_chain=tuple(str(pem) for pem in body["ca_chain"]),
            private_key=None if private_key is None else str(private_key),
            private_key_type=str(body["private_key_type"]),
            key_bits=int(body["key_bits"]),
            expires_at=parse_time(str(body["expires_at"])),
            downloaded=bool(body["downloaded"]) if downloaded is None else downloaded,
        )


@dataclass(frozen=True)
class SerialEntry:
    thing_id: str
    serial: str
    expires_at: datetime
    downloaded: bool


@dataclass(frozen=True)
class SerialPage:
    """A page of `GET /things/{id}/serials`, ordered by expiry then serial."""

    total: int
    offset: int
    limit: int
    certs: tuple[SerialEntry, ...]

    @property
    def serials(self) -> tuple[str, ...]:
        return tuple(entry.serial for entry in self.certs)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SerialPage:
        return cls(
            total=int(body["total"]), offset=int(body["offset"]), limit=int(body["limit"]),
            certs=tuple(SerialEntry(thing_id=str(item["thing_id"]),
                                    serial=str(item["cert_serial"]),
                                    expires_at=parse_time(str(item["expires_at"])),
                                    downloaded=bool(item["downloaded"]))
                        for item in body["certs"]),
        )


@dataclass(frozen=True)
class CertificatePage:
    """A page of `GET /things/{id}/certs` (view bodies, no private keys)."""

    total: int
    offset: int
    limit: int
    certs: tuple[Certificate, ...]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> CertificatePage:
        return cls(total=int(body["total"]), offset=int(body["offset"]),
                   limit=int(body["limit"]),
                   certs=tuple(Certificate.from_body(item) for item in body["certs"]))


@dataclass(frozen=True)
class Revocation:
    serial: str
    revoked_at: datetime

    @classmethod
    def from_body(cls, serial: str, body: Mapping[str, Any]) -> Revocation:
        moment = body.get("revocation_time", body.get("RevocationTime"))
        return cls(serial=serial, revoked_at=parse_time(str(moment)))


@dataclass(frozen=True)
class Health:
    """`GET /health`, given for 200 and for 503 alike (`ok` tells which)."""

    ok: bool
    status: str
    version: str
    commit: str
    description: str
    build_time: str
    checks: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_body(cls, ok: bool, body: Mapping[str, Any]) -> Health:
        return cls(ok=ok, status=str(body["status"]), version=str(body.get("version", "")),
                   commit=str(body.get("commit", "")),
                   description=str(body.get("description", "")),
                   build_time=str(body.get("build_time", "")),
                   checks=dict(body.get("checks", {})))
