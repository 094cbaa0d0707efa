"""The audit trail's records, their canonical form and hash, and the chain append (SPEC 15).

Each change the store makes writes one ``AuditRecord`` in the change's own transaction. Records
are numbered 1, 2, ... (``seq``) and chained: ``hash = SHA-256(prev_hash || canonical)``, where
``canonical`` is the record's content as compact JSON with sorted keys and ``prev_hash`` is the
previous record's hash (64 zeros for the first). Appends lock the single ``audit_chain`` row
(``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite write transactions hold the database's
write lock from BEGIN), so concurrent writers, processes and replicas extend one chain.

Subscribers (``subscribe``) are told of every record after its transaction committed; the
metrics count issued and revoked certificates that way.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from repository.schema import AUDIT_CHAIN_ID, audit_chain, audit_log

GENESIS = "0" * 64
log = logging.getLogger(__name__)


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
        """The content the hash covers: every field but the two hashes, as sorted JSON."""
        content = asdict(self)
        del content["prev_hash"], content["hash"]
        content["issued"], content["revoked"], content["downloaded"] = (
            list(self.issued), list(self.revoked), list(self.downloaded))
        return json.dumps(content, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")

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
    """Chain ``records`` after the current head and write them, in ``conn``'s transaction.

    Call it last in a transaction: the chain head stays locked until COMMIT.
    """
    if not records:
        return []
    head = conn.execute(
        select(audit_chain.c.seq, audit_chain.c.hash)
        .where(audit_chain.c.id == AUDIT_CHAIN_ID).with_for_update()
    ).one()
    seq, previous = int(head.seq), str(head.hash)
    chained: list[AuditRecord] = []
    for record in records:
        seq += 1
        linked = replace(record, seq=seq, prev_hash=previous)
        linked = replace(linked, hash=linked.computed_hash())
        chained.append(linked)
        previous = linked.hash
    conn.execute(insert(audit_log), [_row(record) for record in chained])
    conn.execute(update(audit_chain).where(audit_chain.c.id == AUDIT_CHAIN_ID)
                 .values(seq=seq, hash=previous))
    return chained


def _row(record: AuditRecord) -> dict[str, Any]:
    row = asdict(record)
    for name in ("issued", "revoked", "downloaded"):
        row[name] = " ".join(row[name])
    return row


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
    """The chain head: the last seq and hash."""
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
