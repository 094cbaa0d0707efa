"""The audit trail's records, their canonical form and hash, and the chain append (SPEC 15).

Each change the store makes writes one ``AuditRecord`` in the change's own transaction. Records
are numbered 1, 2, ... (``seq``) and chained: ``hash = SHA-256(prev_hash || canonical)``, where
``canonical`` is the record's content as compact JSON with sorted keys and ``prev_hash`` is the
previous record's hash (64 zeros for the first). The single ``audit_chain`` row holds the last
record's number and hash. An append takes the next numbers and reads the last hash with one
``UPDATE ... RETURNING`` (which locks the row until COMMIT, and on PostgreSQL returns the row as
the writer before it committed it), then writes the records and the new head in one more
statement; SQLite's write transactions hold the database's write lock from BEGIN. So
concurrent writers, processes and replicas extend one chain, and a removed last record is seen.

Subscribers (``subscribe``) are told of every record after its transaction committed; the
metrics count issued and revoked certificates that way.
"""

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, TextClause, bindparam, select, text, update
from sqlalchemy.engine import Connection

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
        return _ENCODER.encode({
            "action": self.action, "actor": self.actor, "at": self.at, "client": self.client,
            "downloaded": list(self.downloaded), "email": self.email, "issued": list(self.issued),
            "reason": self.reason, "request_id": self.request_id, "revoked": list(self.revoked),
            "seq": self.seq, "thing_id": self.thing_id}).encode("utf-8")

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


def append(conn: Connection, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Chain ``records`` after the current last one and write them, in ``conn``'s transaction.

    Call it last in a transaction: the chain's head row stays locked until COMMIT.
    """
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
        params.update({
            f"seq_{index}": linked.seq, f"at_{index}": linked.at,
            f"actor_{index}": linked.actor, f"email_{index}": linked.email,
            f"action_{index}": linked.action, f"thing_id_{index}": linked.thing_id,
            f"issued_{index}": " ".join(linked.issued),
            f"revoked_{index}": " ".join(linked.revoked),
            f"downloaded_{index}": " ".join(linked.downloaded),
            f"reason_{index}": linked.reason, f"client_{index}": linked.client,
            f"request_id_{index}": linked.request_id, f"prev_hash_{index}": previous,
            f"hash_{index}": linked.hash,
        })
        previous = linked.hash
    params["head_hash"] = previous
    postgres = conn.dialect.name == "postgresql"
    conn.execute(_write_rows(count, with_head=postgres), params)
    if not postgres:
        conn.execute(text(_SET_HEAD), {"head_hash": previous})
    return chained


@functools.lru_cache(maxsize=128)
def _write_rows(count: int, *, with_head: bool) -> TextClause:
    """One statement inserting ``count`` records (a single round trip, no SQL compiled per
    call), on PostgreSQL together with the head's new hash."""
    values = ", ".join("(" + ", ".join(f":{name}_{index}" for name in _COLUMNS) + ")"
                       for index in range(count))
    insert_rows = f"INSERT INTO audit_log ({', '.join(_COLUMNS)}) VALUES {values}"
    if with_head:
        return text(f"WITH head AS ({_SET_HEAD}) {insert_rows}")
    return text(insert_rows)


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
