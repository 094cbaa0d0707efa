"""Read statements built once with bind parameters (same SQL text each call: cached compiled
forms in SQLAlchemy, server-side prepared statements in psycopg after a few executions)."""

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Float,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    cast,
    func,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)

from repository._rows import CERT_COLUMNS
from repository.schema import certs, revoked_certs

ACTIVE = certs.c.revoked_at.is_(None)
_ORDER = (certs.c.expires_at, certs.c.serial)
_REVERSED = (certs.c.expires_at.desc(), certs.c.serial.desc())


def epoch_seconds(value: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A timestamp as seconds on a fixed scale (differences are what count)."""
    if dialect == "sqlite":
        return func.julianday(value) * 86400.0
    return func.extract("epoch", value)


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


def _at_least_zero(value: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((value > 0, value), else_=0)


@cache
def thing_page(serial: bool, expires_from: bool, expires_to: bool,
               columns: Sequence[ColumnElement[Any]] = CERT_COLUMNS) -> Select[Any]:
    """A page of a thing's active certificates (``columns`` of each) plus the total of all
    matching ones (one row with the total and NULLs when the page is empty).

    One statement, so the page and the total come from one snapshot. The total is counted
    once (a CTE; from the narrow (thing_id) index when only the thing is asked), and the page
    is walked to in the (thing_id, expires_at, serial) index alone (an index-only scan), from
    whichever end of the thing's certificates it is nearer: at most half of them are stepped
    over. Only the page's rows are read from the table. The branch not taken is cut before it
    scans (its condition is on the total alone).
    """
    where = _thing_filter(serial, expires_from, expires_to)
    counted = select(func.count().label("n")).select_from(certs).where(*where).cte("counted")
    total = select(counted.c.n).scalar_subquery()
    offset: BindParameter[int] = bindparam("b_offset", type_=Integer)
    limit: BindParameter[int] = bindparam("b_limit", type_=Integer)
    from_start = offset * 2 + limit <= total
    forward = (
        select(certs.c.serial)
        .where(*where, from_start)
        .order_by(*_ORDER)
        .offset(offset)
        .limit(limit)
        .subquery()
    )
    # The same rows, found from the end: skip what lies after the page, take what is left of
    # it (nothing when the offset is past the end).
    backward = (
        select(certs.c.serial)
        .where(*where, ~from_start)
        .order_by(*_REVERSED)
        .offset(_at_least_zero(total - offset - limit))
        .limit(_at_least_zero(case((total - offset < limit, total - offset), else_=limit)))
        .subquery()
    )
    window = union_all(select(forward.c.serial), select(backward.c.serial)).subquery()
    page = (
        select(*columns)
        .join_from(certs, window, certs.c.serial == window.c.serial)
        .subquery("page")
    )
    # Joined to the total, so that a page past the end is one row with the total alone.
    return (
        select(*page.c, counted.c.n.label("total"))
        .select_from(counted.outerjoin(page, true()))
        .order_by(page.c.expires_at, page.c.serial)
    )


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
# expires_at as POSIX seconds: no datetime is made per row (a million at a first CRL).
EXPIRES_EPOCH = cast(func.extract("epoch", revoked_certs.c.expires_at), Float)
# The CRL as stored entries in (b_after, b_through]: only the DER (and what says which CRLs
# list it), for a block (repository.crl_block) read as rows.
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
