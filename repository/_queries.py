"""Read statements built once with bind parameters (same SQL text each call: cached compiled
forms in SQLAlchemy, server-side prepared statements in psycopg after a few executions)."""

from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    and_,
    bindparam,
    cast,
    func,
    or_,
    select,
    text,
    update,
)

from repository._rows import CERT_COLUMNS
from repository.schema import certs, revoked_certs

ACTIVE = certs.c.revoked_at.is_(None)
_ORDER = (certs.c.expires_at, certs.c.serial)


def like_pattern(fragment: str) -> str:
    """A LIKE pattern matching ``fragment`` anywhere, its wildcards taken literally."""
    escaped = fragment.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


def _thing_filter(serial: bool, expires_from: bool, expires_to: bool) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [certs.c.thing_id == bindparam("b_thing"), ACTIVE]
    if serial:
        where.append(certs.c.serial.like(bindparam("b_pattern"), escape="/"))
    if expires_from:
        where.append(certs.c.expires_at >= bindparam("b_from"))
    if expires_to:
        where.append(certs.c.expires_at <= bindparam("b_to"))
    return where


@cache
def thing_page(serial: bool, expires_from: bool, expires_to: bool) -> Select[Any]:
    """A page of a thing's active certificates plus the total of all matching ones.

    One round trip. The offset is walked in the (thing_id, expires_at, serial) index alone (an
    index-only scan in the subquery); only the page's rows are read from the table. The total
    is an uncorrelated subquery, computed once, also from the index alone.
    """
    where = _thing_filter(serial, expires_from, expires_to)
    window = (
        select(certs.c.serial)
        .where(*where)
        .order_by(*_ORDER)
        .offset(bindparam("b_offset"))
        .limit(bindparam("b_limit"))
        .subquery()
    )
    total = select(func.count()).select_from(certs).where(*where).scalar_subquery()
    return (
        select(*CERT_COLUMNS, total.label("total"))
        .join_from(certs, window, certs.c.serial == window.c.serial)
        .order_by(*_ORDER)
    )


@cache
def thing_count(serial: bool, expires_from: bool, expires_to: bool) -> Select[Any]:
    """The total alone, for a page past the end (where the page query returns no row)."""
    where = _thing_filter(serial, expires_from, expires_to)
    return select(func.count()).select_from(certs).where(*where)


CRL_ENTRIES = (
    select(revoked_certs.c.seq, revoked_certs.c.serial, revoked_certs.c.serial_base,
           revoked_certs.c.revoked_at, revoked_certs.c.reason, revoked_certs.c.expires_at)
    .where(and_(revoked_certs.c.seq > bindparam("b_after"),
                or_(revoked_certs.c.expires_at.is_(None),
                    revoked_certs.c.expires_at > bindparam("b_now"))))
    .order_by(revoked_certs.c.seq)
    .limit(bindparam("b_limit"))
)

_CURRENT = and_(revoked_certs.c.seq > bindparam("b_after"),
                or_(revoked_certs.c.expires_at.is_(None),
                    revoked_certs.c.expires_at > bindparam("b_now")))
# The CRL as stored entries: only the DER (and what says which CRLs list it).
# expires_at as POSIX seconds: no datetime is made per row (a million at a first CRL).
EXPIRES_EPOCH = cast(func.extract("epoch", revoked_certs.c.expires_at), Float)
CRL_ENTRY_DERS = (
    select(revoked_certs.c.seq, revoked_certs.c.crl_entry, EXPIRES_EPOCH)
    .where(_CURRENT)
    .order_by(revoked_certs.c.seq)
    .limit(bindparam("b_limit"))
)
# The same in (b_after, b_through], for a block (repository.crl_block) read as rows.
CRL_ENTRY_BLOCK_ROWS = (
    select(revoked_certs.c.seq, revoked_certs.c.crl_entry, EXPIRES_EPOCH)
    .where(_CURRENT, revoked_certs.c.seq <= bindparam("b_through"))
    .order_by(revoked_certs.c.seq)
    .limit(bindparam("b_limit"))
)
# The revocations in (b_after, b_through] stored without their CRL entry, to encode them.
CRL_ENTRIES_MISSING = (
    select(revoked_certs.c.seq, revoked_certs.c.serial, revoked_certs.c.serial_base,
           revoked_certs.c.revoked_at, revoked_certs.c.reason, revoked_certs.c.expires_at)
    .where(_CURRENT, revoked_certs.c.seq <= bindparam("b_through"),
           revoked_certs.c.crl_entry.is_(None))
    .order_by(revoked_certs.c.seq)
)
KEEP_CRL_ENTRY = (
    update(revoked_certs)
    .where(revoked_certs.c.seq == bindparam("b_seq"), revoked_certs.c.crl_entry.is_(None))
    .values(crl_entry=bindparam("b_entry"))
)
# PostgreSQL: the same for a whole batch in one statement.
KEEP_CRL_ENTRIES_PG = text(
    "UPDATE revoked_certs SET crl_entry = given.der"
    " FROM unnest(CAST(:b_seqs AS BIGINT[]), CAST(:b_ders AS BYTEA[])) AS given(seq, der)"
    " WHERE revoked_certs.seq = given.seq AND revoked_certs.crl_entry IS NULL"
)
