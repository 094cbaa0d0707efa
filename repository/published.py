"""The newest signed CRL as the store keeps it (SPEC 7), and the revocation status of serials
as the OCSP responder asks for it (SPEC 13): the records and the statements behind the
``Store`` methods of the same names."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Select, Update, bindparam, literal, select, union_all, update

from repository.records import RevocationReason
from repository.schema import (
    CRL_STATE_ID,
    PUBLISHED_CRL_ID,
    certs,
    crl_state,
    published_crl,
    revoked_certs,
)

MAX_SERIAL_DIGITS = 64


@dataclass(frozen=True, slots=True)
class StoredCrlHeader:
    """What a stored CRL is, without its bytes: its number, the revocation seq it covers,
    its validity and how many entries it lists."""

    number: int
    revocation_seq: int
    this_update: datetime
    next_update: datetime
    entries: int


@dataclass(frozen=True, slots=True)
class CrlOutlook:
    """The newest revocation's seq and the header of the stored CRL (None: none stored)."""

    revocation_seq: int
    stored: StoredCrlHeader | None


@dataclass(frozen=True, slots=True)
class SerialStatus:
    """A serial this CA issued: active (``revoked_at`` None) or revoked at that time."""

    revoked_at: datetime | None
    reason: RevocationReason | None


_HEADER = (published_crl.c.crl_number, published_crl.c.revocation_seq,
           published_crl.c.this_update, published_crl.c.next_update, published_crl.c.entries)
OUTLOOK: Select[Any] = (
    select(crl_state.c.revocation_seq, *_HEADER)
    .select_from(crl_state.join(published_crl, published_crl.c.id == PUBLISHED_CRL_ID))
    .where(crl_state.c.id == CRL_STATE_ID)
)
STORED: Select[Any] = select(*_HEADER, published_crl.c.der).where(
    published_crl.c.id == PUBLISHED_CRL_ID)
# Replaces the stored CRL only with a newer one: numbers never go back, and the bytes of one
# number are those of the one process that signed it.
STORE: Update = (
    update(published_crl)
    .where(published_crl.c.id == PUBLISHED_CRL_ID,
           published_crl.c.crl_number < bindparam("b_number"))
    .values(crl_number=bindparam("b_number"), revocation_seq=bindparam("b_seq"),
            this_update=bindparam("b_this"), next_update=bindparam("b_next"),
            entries=bindparam("b_entries"), der=bindparam("b_der"))
)
# Taking a number reads the revocation seq in the same statement (both on the crl_state row
# that revocations update): a CRL with a higher number then covers every revocation a lower
# one does.
TAKE_NUMBER: Update = (
    update(crl_state)
    .where(crl_state.c.id == CRL_STATE_ID)
    .values(crl_number=crl_state.c.crl_number + 1, updated_at=bindparam("b_at"))
    .returning(crl_state.c.crl_number, crl_state.c.revocation_seq)
)
_SERIALS: BindParameter[str] = bindparam("b_serials", expanding=True)
# Revoked rows first: a revocation imported from the Go service has no row in certs.
STATUSES: Select[Any] = union_all(
    select(revoked_certs.c.serial, revoked_certs.c.serial_base, revoked_certs.c.revoked_at,
           revoked_certs.c.reason, literal(1).label("listed"))
    .where(revoked_certs.c.serial.in_(_SERIALS)),
    select(certs.c.serial, certs.c.serial_base, certs.c.revoked_at,
           certs.c.revocation_reason, literal(0).label("listed"))
    .where(certs.c.serial.in_(_SERIALS)),
).subquery().select()


def header(row: Any) -> StoredCrlHeader | None:
    """The header of a row starting with the stored CRL's columns; None before the first."""
    number, seq, this_update, next_update, entries = row[:5]
    if not number:
        return None
    return StoredCrlHeader(number, seq, this_update, next_update, entries)


def stored_forms(numbers: list[int]) -> dict[tuple[str, int], int]:
    """How each serial may be stored: lowercase hex (base 16) or, for a certificate imported
    from the Go service, decimal (base 10); serials no certificate of ours can have are left
    out."""
    forms: dict[tuple[str, int], int] = {}
    for number in numbers:
        if number <= 0:
            continue
        hexadecimal = format(number, "x")
        if len(hexadecimal) <= MAX_SERIAL_DIGITS:
            forms[(hexadecimal, 16)] = number
        decimal = str(number)
        if len(decimal) <= MAX_SERIAL_DIGITS:
            forms[(decimal, 10)] = number
    return forms


def statuses(rows: Sequence[Any], forms: dict[tuple[str, int], int],
             reason_of: Callable[[str | None], RevocationReason | None]
             ) -> dict[int, SerialStatus]:
    """The status of each requested number found in ``rows`` (of ``STATUSES``): a revoked_certs
    row wins over the certs row of the same serial."""
    found: dict[int, SerialStatus] = {}
    for serial, base, revoked_at, why, _ in sorted(rows, key=lambda row: -row[4]):
        number = forms.get((serial, base))
        if number is None or number in found:
            continue
        found[number] = SerialStatus(revoked_at, reason_of(why) if revoked_at else None)
    return found
