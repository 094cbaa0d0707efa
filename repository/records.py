"""The values the store accepts and returns: small frozen dataclasses with UTC-aware times."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, TypedDict


class RevocationReason(StrEnum):
    """RFC 5280 CRLReason, named as the CRL builder in ``hsm.crl`` names them."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key_compromise"
    CA_COMPROMISE = "ca_compromise"
    AFFILIATION_CHANGED = "affiliation_changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation"
    CERTIFICATE_HOLD = "certificate_hold"
    REMOVE_FROM_CRL = "remove_from_crl"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn"
    AA_COMPROMISE = "aa_compromise"


KEY_TYPES = frozenset({"rsa", "ec"})


@dataclass(frozen=True, slots=True)
class NewCertificate:
    """A freshly issued certificate to store; ``private_key_pem`` is sealed before it is written."""

    serial: str
    thing_id: str
    certificate_pem: str
    private_key_pem: str | None
    private_key_type: str
    key_bits: int
    not_before: datetime
    expires_at: datetime
    owner_id: str | None = None
    device_key: bool = False  # issued from the device's CSR: no private key to store


@dataclass(frozen=True, slots=True)
class Certificate:
    """An active certificate; ``private_key_pem`` is the decrypted key only where asked for."""

    serial: str
    thing_id: str
    owner_id: str | None
    certificate_pem: str
    private_key_pem: str | None
    private_key_type: str
    key_bits: int
    issued_at: datetime
    not_before: datetime | None
    expires_at: datetime
    downloaded: bool
    issuing_ca: str | None = None
    ca_chain: tuple[str, ...] = ()
    device_key: bool = False


@dataclass(frozen=True, slots=True)
class CertificatePage:
    """One page of a thing's active certificates, ordered by expires_at then serial."""

    total: int
    offset: int
    limit: int
    items: tuple[Certificate, ...]


class PageFilters(TypedDict, total=False):
    """Where a page of a thing's certificates starts, how long it is, and what narrows it."""

    offset: int
    limit: int
    serial: str | None
    expires_from: datetime | None
    expires_to: datetime | None


@dataclass(frozen=True, slots=True)
class SerialEntry:
    """What a list of a thing's serials shows of one active certificate."""

    serial: str
    thing_id: str
    expires_at: datetime
    downloaded: bool


@dataclass(frozen=True, slots=True)
class SerialPage:
    """One page of a thing's serials, in the order of ``CertificatePage``."""

    total: int
    offset: int
    limit: int
    items: tuple[SerialEntry, ...]


@dataclass(frozen=True, slots=True)
class Revocation:
    """A recorded revocation; ``seq`` orders revocations in commit order."""

    seq: int
    serial: str
    thing_id: str
    revoked_at: datetime
    reason: RevocationReason | None
    expires_at: datetime | None
    crl_entry: bytes | None = None  # the revocation's encoded CRL entry, when an encoder is set


class CrlEntry(NamedTuple):
    """A revoked, not yet expired certificate as the CRL needs it.

    ``serial_number`` is the integer serial (hex serials, and decimal ones imported from Go).
    ``expires_at`` is None for revocations imported from Go, which did not record it.
    An immutable typed tuple rather than a frozen dataclass: a CRL read builds up to a million
    of these, and a tuple is built four times faster.
    """

    seq: int
    serial: str
    serial_number: int
    revoked_at: datetime
    reason: RevocationReason | None
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class CrlState:
    """The last CRL number handed out and the sequence number of the latest revocation."""

    crl_number: int
    revocation_seq: int


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to publish later; the payload is sealed while it waits in the outbox."""

    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A pending event read back from the outbox, payload decrypted."""

    id: int
    subject: str
    payload: bytes
    created_at: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class Replacement:
    """The result of an atomic renew/rotate: the new certificate and the old one's revocation."""

    certificate: Certificate
    revocation: Revocation
    event_id: int | None
