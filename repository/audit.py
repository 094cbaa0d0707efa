"""The audit trail's records, their canonical form and hash, and the chain append (SPEC 15).

Each change the store makes writes one ``AuditRecord`` in the change's own transaction. Records
are numbered 1, 2, ... (``seq``) and chained: ``hash = SHA-256(prev_hash || canonical)``, where
``canonical`` is the record's content as compact JSON with sorted keys and ``prev_hash`` is the
previous record's hash (64 zeros for the first). The single ``audit_chain`` row holds the last
record's number and hash, so a removed last record is seen.

On PostgreSQL an append is one statement: it locks the head row (``FOR UPDATE``, which waits
for a concurrent writer's COMMIT and then reads the row as that writer left it), numbers and
hashes the records in SQL, writes them and moves the head, and returns the numbers and hashes.
The database hashes what this module encodes: each record's canonical form is sent as the bytes
before and after its ``seq``, so the one step done in SQL is ``SHA-256(prev_hash || before ||
seq || after)`` as hex. On SQLite, whose write transactions hold the database's write lock from
BEGIN, the head is read, the records are hashed here, and rows and head are written in two
statements. Either way concurrent writers, processes and replicas extend one chain.

Subscribers (``subscribe``) are told of every record after its transaction committed; the
metrics count issued and revoked certificates that way.
"""

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Dialect,
    TextClause,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from repository import compiled
from repository.schema import AUDIT_CHAIN_ID, audit_chain, audit_log

GENESIS = "0" * 64
log = logging.getLogger(__name__)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_TAKE_NUMBERS = (
    update(audit_chain).where(audit_chain.c.id == AUDIT_CHAIN_ID)
    .values(seq=audit_chain.c.seq + bindparam("b_count", type_=BigInteger))
    .returning(audit_chain.c.seq, audit_chain.c.hash)
)
_SET_HEAD = "UPDATE audit_chain SET hash = :head_hash WHERE id = 1"
_COLUMNS = ("seq", "at", "actor", "email", "action", "thing_id", "issued", "revoked",
            "downloaded", "reason", "client", "request_id", "prev_hash", "hash")
# The record's own columns: all but seq and the two hashes.
_CONTENT = _COLUMNS[1:-2]
# Where seq sits in the canonical form: keys are sorted, and thing_id is the only one after it.
_SEQ_KEY, _AFTER_SEQ = b'"seq":', b',"thing_id":'
_INPUT_NAMES = ("before", "after", *_CONTENT)


def _chain_sql(count: int) -> str:
    """The chain in SQL (PostgreSQL) for ``count`` records given as ``:audit_before_<i>``,
    ``:audit_after_<i>`` and ``:audit_<column>_<i>``: numbered from the locked head, each
    hashed after the one before it, written, and the head moved; the result is each record's
    seq and hashes, in order."""
    rows = ", ".join(
        f"({index + 1}, " + ", ".join(f":audit_{name}_{index}" for name in _INPUT_NAMES) + ")"
        for index in range(count))
    return f"""given (n, {", ".join(_INPUT_NAMES)}) AS (VALUES {rows}),
old AS (SELECT seq, hash FROM audit_chain WHERE id = {AUDIT_CHAIN_ID} FOR UPDATE),
chain (n, seq, prev_hash, hash) AS (
    SELECT 0, seq, CAST(hash AS text), CAST(hash AS text) FROM old
  UNION ALL
    SELECT chain.n + 1, chain.seq + 1, chain.hash, encode(sha256(
        convert_to(chain.hash, 'UTF8') || CAST(given.before AS bytea)
        || convert_to(CAST(chain.seq + 1 AS text), 'UTF8') || CAST(given.after AS bytea)
    ), 'hex')
    FROM chain JOIN given ON given.n = chain.n + 1
),
linked AS (SELECT n, seq, prev_hash, hash FROM chain WHERE n > 0),
head AS (UPDATE audit_chain SET seq = linked.seq, hash = linked.hash FROM linked
         WHERE audit_chain.id = {AUDIT_CHAIN_ID} AND linked.n = {count}),
written AS (INSERT INTO audit_log ({", ".join(_COLUMNS)})
    SELECT linked.seq, {", ".join(f"given.{name}" for name in _CONTENT)},
           linked.prev_hash, linked.hash FROM linked JOIN given USING (n))
SELECT seq, prev_hash, hash FROM linked ORDER BY n"""


@dataclass(frozen=True)
class Audit:
    """Who made a change and how the request reached us; the store adds what changed."""

    actor: str
    action: str
    email: str | None = None
    client: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One record of the trail as stored (``seq``, ``prev_hash`` and ``hash`` set on append)."""

    at: str
    actor: str
    action: str
    thing_id: str
    issued: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    downloaded: tuple[str, ...] = ()
    reason: str | None = None
    email: str | None = None
    client: str | None = None
    request_id: str | None = None
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""

    def canonical(self) -> bytes:
        """The content the hash covers: every field but the two hashes, as JSON with sorted
        keys and no spaces."""
        before, after = self.canonical_around_seq()
        return before + str(self.seq).encode("ascii") + after

    def canonical_around_seq(self) -> tuple[bytes, bytes]:
        """The canonical form without the digits of ``seq``: the bytes before them and after."""
        encoded = _ENCODER.encode({
            "action": self.action, "actor": self.actor, "at": self.at, "client": self.client,
            "downloaded": list(self.downloaded), "email": self.email, "issued": list(self.issued),
            "reason": self.reason, "request_id": self.request_id, "revoked": list(self.revoked),
            "seq": 0, "thing_id": self.thing_id}).encode("utf-8")
        # Quotes inside strings are escaped, so this is the key itself, and the last one.
        start, _, end = encoded.rpartition(_SEQ_KEY + b"0" + _AFTER_SEQ)
        return start + _SEQ_KEY, _AFTER_SEQ + end

    def computed_hash(self, prev_hash: str | None = None) -> str:
        """SHA-256 of the previous hash (this record's own by default) and the content."""
        previous = self.prev_hash if prev_hash is None else prev_hash
        return hashlib.sha256(previous.encode("ascii") + self.canonical()).hexdigest()


def record_for(audit: Audit, at: datetime, thing_id: str, *, issued: Sequence[str] = (),
               revoked: Sequence[str] = (), downloaded: Sequence[str] = (),
               reason: str | None = None) -> AuditRecord:
    """The record of one change made by ``audit.actor``."""
    return AuditRecord(
        at=timestamp(at), actor=audit.actor, action=audit.action, thing_id=thing_id,
        issued=tuple(issued), revoked=tuple(revoked), downloaded=tuple(downloaded),
        reason=reason, email=audit.email, client=audit.client, request_id=audit.request_id)


def timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: the stored form of ``at`` (sorts as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, eq=False)  # one per statement shape, compared by identity
class Alongside:
    """A change written with an append: one INSERT, UPDATE or DELETE without RETURNING, its
    ``:name`` parameters typed by ``binds``. On PostgreSQL it runs inside the append's own
    statement (one round trip for both), elsewhere just before it."""

    sql: str
    binds: tuple[BindParameter[Any], ...] = ()

    @functools.cached_property
    def clause(self) -> TextClause:
        return text(self.sql).bindparams(*self.binds)


def append(conn: Connection, records: Sequence[AuditRecord], *,
           alongside: Alongside | None = None, params: Mapping[str, Any] | None = None
           ) -> list[AuditRecord]:
    """Chain ``records`` after the current last one and write them, in ``conn``'s transaction,
    with ``alongside`` (and its ``params``) if given; the records as written.

    Call it last in a transaction: the chain's head row stays locked until COMMIT.
    """
    if conn.dialect.name == "postgresql" and records:
        return _append_in_sql(conn, records, alongside, params or {})
    if alongside is not None:
        conn.execute(alongside.clause, params or {})
    return _append_here(conn, records)


def _append_in_sql(conn: Connection, records: Sequence[AuditRecord],
                   alongside: Alongside | None, params: Mapping[str, Any]) -> list[AuditRecord]:
    given = dict(params)
    for index, record in enumerate(records):
        given[f"audit_before_{index}"], given[f"audit_after_{index}"] = \
            record.canonical_around_seq()
        given.update({f"audit_{name}_{index}": _column_value(record, name)
                      for name in _CONTENT})
    numbered = compiled.execute(
        conn, _chain_statement(len(records), alongside, conn.dialect), given)
    if len(numbered) != len(records):
        raise RuntimeError(f"the audit chain numbered {len(numbered)} of {len(records)} "
                           "records (is its head row missing?)")
    return [replace(record, seq=int(seq), prev_hash=prev_hash, hash=hash_)
            for record, (seq, prev_hash, hash_) in zip(records, numbered, strict=True)]


@functools.lru_cache(maxsize=128)
def _chain_statement(count: int, alongside: Alongside | None, dialect: Dialect
                     ) -> compiled.Prepared:
    if alongside is None:
        statement = text(f"WITH RECURSIVE {_chain_sql(count)}")
    else:
        statement = text(f"WITH RECURSIVE alongside AS ({alongside.sql}), {_chain_sql(count)}"
                         ).bindparams(*alongside.binds)
    return compiled.prepare(statement, dialect)


def _column_value(record: AuditRecord, name: str) -> str | None:
    value = getattr(record, name)
    return " ".join(value) if isinstance(value, tuple) else value


def _append_here(conn: Connection, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """The append with the hashes computed in this process (SQLite)."""
    if not records:
        return []
    count = len(records)
    last, previous = conn.execute(_TAKE_NUMBERS, {"b_count": count}).one()
    chained: list[AuditRecord] = []
    params: dict[str, Any] = {}
    for index, record in enumerate(records):
        linked = replace(record, seq=last - count + 1 + index, prev_hash=previous)
        linked = replace(linked, hash=linked.computed_hash())
        chained.append(linked)
        params.update({f"{name}_{index}": _column_value(linked, name) for name in _COLUMNS})
        previous = linked.hash
    conn.execute(_write_rows(count), params)
    conn.execute(text(_SET_HEAD), {"head_hash": previous})
    return chained


@functools.lru_cache(maxsize=128)
def _write_rows(count: int) -> TextClause:
    """One statement inserting ``count`` records (a single round trip, no SQL compiled per
    call)."""
    values = ", ".join("(" + ", ".join(f":{name}_{index}" for name in _COLUMNS) + ")"
                       for index in range(count))
    return text(f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES {values}")


def from_row(row: Any) -> AuditRecord:
    """A stored row back as a record (for listing and verification)."""
    return AuditRecord(
        at=row.at, actor=row.actor, action=row.action, thing_id=row.thing_id,
        issued=tuple(row.issued.split()), revoked=tuple(row.revoked.split()),
        downloaded=tuple(row.downloaded.split()), reason=row.reason, email=row.email,
        client=row.client, request_id=row.request_id, seq=int(row.seq),
        prev_hash=row.prev_hash, hash=row.hash)


def read_records(conn: Connection, *, after_seq: int = 0, limit: int = 1000,
                 thing_id: str | None = None, since: str | None = None) -> list[AuditRecord]:
    """Up to ``limit`` records with seq > after_seq in seq order, optionally filtered."""
    stmt = select(audit_log).where(audit_log.c.seq > after_seq)
    if thing_id is not None:
        stmt = stmt.where(audit_log.c.thing_id == thing_id)
    if since is not None:
        stmt = stmt.where(audit_log.c.at >= since)
    rows = conn.execute(stmt.order_by(audit_log.c.seq).limit(limit))
    return [from_row(row) for row in rows]


def read_head(conn: Connection) -> tuple[int, str]:
    """The chain head: the last record's number and hash."""
    row = conn.execute(select(audit_chain.c.seq, audit_chain.c.hash)
                       .where(audit_chain.c.id == AUDIT_CHAIN_ID)).one()
    return int(row.seq), str(row.hash)


def iter_records(read: Callable[[int], list[AuditRecord]]) -> Iterator[AuditRecord]:
    """Every record, fetched by ``read(after_seq)`` a page at a time."""
    after = 0
    while True:
        page = read(after)
        yield from page
        if not page:
            return
        after = page[-1].seq


_subscribers: list[Callable[[AuditRecord], None]] = []


def subscribe(callback: Callable[[AuditRecord], None]) -> None:
    """Call ``callback`` with every record this process commits (once per callback)."""
    if callback not in _subscribers:
        _subscribers.append(callback)


def committed(records: Sequence[AuditRecord]) -> None:
    """Tell the subscribers; a failing subscriber is logged, never the change's failure."""
    for record in records:
        for callback in _subscribers:
            try:
                callback(record)
            except Exception as exc:  # noqa: BLE001 - observers must not undo a commit
                log.warning("audit subscriber failed: %s", type(exc).__name__)
