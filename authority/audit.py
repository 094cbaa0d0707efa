"""Reading and checking the audit trail (SPEC 15): ``certs audit list`` and ``certs audit verify``.

The records, their canonical form and hash live in ``repository.audit`` (the store writes them
in each change's transaction); this module walks the chain and names the first record that was
changed, removed or inserted.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from authority.durations import parse_duration
from repository import Store, create_engine_for
from repository.audit import GENESIS, AuditRecord, iter_records

PAGE = 1000


@dataclass(frozen=True)
class Verdict:
    ok: bool
    records: int
    problem: str = ""
    seq: int | None = None


def records(store: Store, *, thing_id: str | None = None,
            since: datetime | None = None) -> Iterator[AuditRecord]:
    """Every record, oldest first, optionally of one thing and from a time on."""
    return iter_records(lambda after: store.audit_records(
        after_seq=after, limit=PAGE, thing_id=thing_id, since=since))


def as_json_line(record: AuditRecord) -> str:
    """A record as ``certs audit list`` prints it."""
    return json.dumps({
        "seq": record.seq, "at": record.at, "actor": record.actor, "email": record.email,
        "action": record.action, "thing_id": record.thing_id, "issued": list(record.issued),
        "revoked": list(record.revoked), "downloaded": list(record.downloaded),
        "reason": record.reason, "client": record.client, "request_id": record.request_id,
        "hash": record.hash,
    })


def verify_chain(page_after: Callable[[int], list[AuditRecord]],
                 head: Callable[[], tuple[int, str]]) -> Verdict:
    """Check every record (read by ``page_after(seq)`` in seq order) against its predecessor and
    the chain head. Records appended while it runs are checked too: a record past the head
    read at first counts as inserted only if the head does not cover it when read again."""
    head_seq, head_hash = head()
    expected_seq, previous, before_previous = 1, GENESIS, GENESIS
    count = 0
    while True:
        page = page_after(expected_seq - 1)
        if not page:
            if expected_seq - 1 < head_seq:
                return _bad(count, expected_seq, "removed")
            if previous != head_hash and head_seq == expected_seq - 1:
                return _bad(count, head_seq, "changed")
            return Verdict(True, count)
        for record in page:
            count += 1
            if record.seq > head_seq:
                head_seq, head_hash = head()
                if record.seq > head_seq:
                    return _bad(count, record.seq, "inserted")
            if record.seq != expected_seq:
                return _bad(count, expected_seq, "removed")
            if record.prev_hash != previous:
                # It links past its predecessor: that one was slipped in; else it was altered.
                if record.prev_hash == before_previous and record.seq > 1:
                    return _bad(count, record.seq - 1, "inserted")
                return _bad(count, record.seq - 1, "changed")
            if record.computed_hash() != record.hash:
                return _bad(count, record.seq, "changed")
            before_previous, previous = previous, record.hash
            expected_seq += 1


def _bad(count: int, seq: int, what: str) -> Verdict:
    return Verdict(False, count, f"audit record {seq} was {what}", seq)


def verify(store: Store) -> Verdict:
    """Check the whole trail in ``store``."""
    return verify_chain(lambda after: store.audit_records(after_seq=after, limit=PAGE),
                        store.audit_head)


class _NoKeys:
    """The trail holds no keys: a store opened for it never seals or opens one."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        raise RuntimeError("the audit trail needs no key sealing")

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        raise RuntimeError("the audit trail needs no key sealing")


def open_trail(db_url: str) -> Store:
    """A store on ``db_url`` for reading the trail only (no HSM needed)."""
    return Store(create_engine_for(db_url, pool_size=1, max_overflow=0), _NoKeys())


def parse_since(text: str) -> datetime:
    """``--since``: an RFC 3339 time (``2026-12-01T10:00:00Z``, a date) or a duration ago
    (``24h``, ``7d``)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ValueError:
            raise ValueError(f"--since must be an RFC 3339 time or a duration, not {text!r}"
                             ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
