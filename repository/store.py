"""The certificate store: every operation is one transaction on the sync engine (SQLAlchemy Core).

Keys are sealed before a transaction starts and opened after it ends where possible, so no
HSM call holds database locks longer than needed. Revocations serialise on the single
``crl_state`` row, so their ``seq`` values commit in increasing order and a reader that has
seen ``seq`` N has seen every revocation before it (the CRL publisher's incremental read relies
on it). See the module ``repository.schema`` for the tables.
"""

import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, Unpack

from sqlalchemy import (
    ColumnElement,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from repository import _queries, _rows, audit, compiled, crl_block, loop_reads, published
from repository._tx import Transactions
from repository.audit import Audit, AuditRecord
from repository.coltypes import UTCDateTime
from repository.crl_block import CrlEntryBlock
from repository.errors import AlreadyDownloaded, NotFound, NotOwner
from repository.loop_reads import LoopReads
from repository.records import (
    Certificate,
    CertificatePage,
    CrlEntry,
    CrlState,
    NewCertificate,
    NewEvent,
    OutboxEvent,
    PageFilters,
    Replacement,
    Revocation,
    RevocationReason,
    SerialPage,
)
from repository.schema import CRL_STATE_ID, certs, crl_state, outbox, revoked_certs
from repository.sealer import KeySealer

log = logging.getLogger(__name__)
_ACTIVE = _queries.ACTIVE
_RELEASE_CHUNK = 500  # serials per statement when a run gives its leases back
_DUE_MARGIN_SECONDS = 1.0
P = TypeVar("P", CertificatePage, SerialPage)


@dataclass(frozen=True)
class _Listing(Generic[P]):
    """What a page of a thing's certificates is made of: the columns read of each, and the
    page made of the rows (those columns then the total; one row of NULLs with the total when
    the page is empty)."""
    columns: tuple[Any, ...]
    item: Callable[[Any], Any]
    made: Callable[..., P]

    def page(self, rows: Sequence[Any], offset: int, limit: int) -> P:
        items = tuple(self.item(row) for row in rows if row[0] is not None)
        return self.made(total=int(rows[0][-1]), offset=offset, limit=limit, items=items)


_CERTIFICATES = _Listing(_rows.CERT_COLUMNS, _rows.certificate, CertificatePage)
_SERIALS = _Listing(_rows.SERIAL_COLUMNS, _rows.serial_entry, SerialPage)

T = TypeVar("T")

# Signs the CRL numbered ``number`` that covers every revocation up to seq ``covered``, the
# given (not yet committed) ones among them; returns its header and DER. Called inside the
# revoking transaction, so a failure to sign leaves nothing revoked (SPEC: a 503 means nothing
# changed).
SealCrl = Callable[[int, int, Sequence[Revocation]], tuple[published.StoredCrlHeader, bytes]]
# Encodes one revocation as its CRL entry (DER): serial number, revocation time, reason (the
# RevocationReason value). The domain layer provides it; the store only keeps the bytes.
CrlEntryEncoder = Callable[[int, datetime, str], bytes]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    """Certificates, revocations, CRL state, rotation leases and the event outbox."""

    def __init__(
        self,
        engine: Engine,
        sealer: KeySealer,
        *,
        clock: Callable[[], datetime] = _utcnow,
        crl_entry: CrlEntryEncoder | None = None,
    ) -> None:
        self.engine = engine
        self._tx = Transactions(engine)
        self._sealer = sealer
        self._now = clock
        self._crl_entry = crl_entry
        self._build_statements()
        self._loop_reads: LoopReads | None = None
        if engine.dialect.name == "postgresql":
            self._loop_reads = LoopReads(engine)
            self._get_on_loop = loop_reads.prepare(self._get, engine)

    @property
    def reads_on_loop(self) -> bool:
        """True when ``get_async`` and the ``list_*_async`` reads are made on the event loop
        (PostgreSQL); elsewhere the sync methods are to be run in a worker thread."""
        return self._loop_reads is not None

    def observe_reads(self, observer: loop_reads.Observer) -> None:
        """Open ``observer()`` around each read made on the event loop (a tracing span)."""
        if self._loop_reads is not None:
            self._loop_reads.observe(observer)

    async def close_reads(self) -> None:
        """Close the event loop's read connections (at shutdown, on that loop)."""
        if self._loop_reads is not None:
            await self._loop_reads.close()

    def encode_crl_entries(self, encoder: CrlEntryEncoder) -> None:
        """Store each new revocation's CRL entry, encoded by ``encoder``, with it."""
        self._crl_entry = encoder

    def _build_statements(self) -> None:
        by_serial = and_(certs.c.serial == bindparam("b_serial"), _ACTIVE)
        self._get = select(*_rows.CERT_COLUMNS).where(by_serial)
        self._get_keyed = select(*_rows.CERT_COLUMNS, *_rows.KEY_COLUMNS).where(by_serial)
        self._lock_keyed = self._get_keyed.with_for_update()
        self._insert_cert = insert(certs)
        self._revoke_row = (
            update(certs)
            .where(by_serial)
            .values(
                revoked_at=bindparam("b_at"),
                revocation_reason=bindparam("b_reason"),
                private_key_enc=None,
                client_key=None,
                lease_owner=None,
                lease_expires_at=None,
            )
            .returning(certs.c.thing_id, certs.c.expires_at, certs.c.serial_base)
        )
        self._bump_seq = (
            update(crl_state)
            .where(crl_state.c.id == CRL_STATE_ID)
            .values(revocation_seq=crl_state.c.revocation_seq + 1, updated_at=bindparam("b_at"))
            .returning(crl_state.c.revocation_seq)
        )
        self._insert_revoked = insert(revoked_certs)
        self._mark_downloaded = (
            update(certs)
            .where(certs.c.serial == bindparam("b_serial"))
            .values(downloaded=True, private_key_enc=None, client_key=None)
        )
        self._insert_event = insert(outbox).returning(outbox.c.id)

    # ----------------------------------------------------------------- health

    def ping(self) -> None:
        """Raise Unavailable unless the database answers a trivial query."""
        self._tx.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())

    # ----------------------------------------------------------- certificates

    def save(self, cert: NewCertificate, *, audit: Audit | None = None) -> Certificate:
        """Store a newly issued certificate; Conflict when the serial exists. ``audit`` says
        who issued it (default: the operator)."""
        return self.save_many([cert], [audit])[0]

    def save_many(self, certs: Sequence[NewCertificate],
                  audits: Sequence[Audit | None] | None = None) -> list[Certificate]:
        """Store several newly issued certificates in one transaction, all or none; Conflict
        (and nothing stored) when any serial exists. ``audits[i]`` is who issued ``certs[i]``.
        On PostgreSQL the rows and their audit records are one statement."""
        if not certs:
            return []
        rows = [self._cert_values(_rows.check_new(cert), cert) for cert in certs]
        who = list(audits) if audits is not None else [None] * len(rows)
        records = [_audit_record(by, "issue", row["created_at"], row["thing_id"],
                                 issued=(row["serial"],))
                   for row, by in zip(rows, who, strict=True)]
        params = {f"{name}_{index}": row[name]
                  for index, row in enumerate(rows) for name in _CERT_NAMES}
        self._write_audited(_nothing, records, alongside=_insert_certs(len(rows)), params=params)
        return [self._new_record(row["serial"], cert, row["created_at"])
                for row, cert in zip(rows, certs, strict=True)]

    def get(self, serial: str, *, with_key: bool = False) -> Certificate:
        """The active certificate with this serial (any case); NotFound otherwise.

        The private key is opened only with ``with_key=True`` (one HSM call).
        """
        key = _rows.lookup_serial(serial)
        stmt = self._get_keyed if with_key else self._get
        row = _found(self._tx.read(lambda conn: conn.execute(stmt, {"b_serial": key}).first()),
                     key)
        return _rows.certificate(row, self._open_key(row) if with_key else None)

    async def get_async(self, serial: str) -> Certificate:
        """``get`` (without the key) awaited on the running loop; only where reads_on_loop."""
        key = _rows.lookup_serial(serial)
        rows = await self._on_loop().rows(self._get_on_loop, {"b_serial": key})
        return _rows.certificate(_found(rows[0] if rows else None, key))

    async def list_by_thing_async(self, thing_id: str,
                                  **page: Unpack[PageFilters]) -> CertificatePage:
        """``list_by_thing`` awaited on the running loop; only where reads_on_loop."""
        return await self._listed_on_loop(_CERTIFICATES, thing_id, page)

    async def list_serials_async(self, thing_id: str,
                                 **page: Unpack[PageFilters]) -> SerialPage:
        """``list_serials`` awaited on the running loop; only where reads_on_loop."""
        return await self._listed_on_loop(_SERIALS, thing_id, page)

    def _on_loop(self) -> LoopReads:
        if self._loop_reads is None:
            raise RuntimeError("this store reads on the event loop only on PostgreSQL")
        return self._loop_reads

    async def _listed_on_loop(self, listing: _Listing[P], thing_id: str,
                              page: PageFilters) -> P:
        shape, params = _page_request(thing_id, **page)
        rows = await self._on_loop().rows(self._page_on_loop(shape, listing.columns), params)
        return listing.page(rows, params["b_offset"], params["b_limit"])

    @functools.cache  # noqa: B019 - one per shape and store, and stores live as long as the process
    def _page_on_loop(self, shape: tuple[bool, bool, bool],
                      columns: tuple[Any, ...]) -> compiled.Prepared:
        return loop_reads.prepare(_queries.thing_page(*shape, columns), self.engine)

    def list_by_thing(self, thing_id: str, **page: Unpack[PageFilters]) -> CertificatePage:
        """A page of the thing's active certificates by expires_at then serial, with the total.

        ``offset`` (0) and ``limit`` (10) place the page; ``serial`` matches a substring
        (case-insensitively); ``expires_from``/``expires_to`` are inclusive bounds on
        expires_at. Items carry no private key.
        """
        return self._listed(_CERTIFICATES, thing_id, page)

    def list_serials(self, thing_id: str, **page: Unpack[PageFilters]) -> SerialPage:
        """The page ``list_by_thing`` gives, with only what a list of serials shows of each
        certificate (no PEM is read)."""
        return self._listed(_SERIALS, thing_id, page)

    def _listed(self, listing: _Listing[P], thing_id: str, page: PageFilters) -> P:
        shape, params = _page_request(thing_id, **page)
        statement = _queries.thing_page(*shape, listing.columns)
        rows = self._tx.read(lambda conn: list(conn.execute(statement, params)))
        return listing.page(rows, params["b_offset"], params["b_limit"])

    def mark_downloaded(self, serial: str, thing_id: str, *, audit: Audit | None = None
                        ) -> Certificate:
        """Hand out the key once: mark downloaded, destroy the stored key, return it decrypted.

        NotFound (unknown or revoked), NotOwner (another thing's certificate) or
        AlreadyDownloaded. Of two concurrent callers exactly one succeeds.
        """
        key = _rows.lookup_serial(serial)

        def work(conn: Connection) -> Certificate:
            row = _found(conn.execute(self._lock_keyed, {"b_serial": key}).first(), key)
            if row.thing_id != thing_id:
                raise NotOwner("certificate belongs to another thing")
            if row.downloaded:
                raise AlreadyDownloaded("certificate already downloaded")
            pem = self._open_key(row)
            conn.execute(self._mark_downloaded, {"b_serial": key})
            return replace(_rows.certificate(row, pem), downloaded=True)

        by = audit or Audit(actor=f"thing:{thing_id}", action="download")
        record = _audit_record(by, "download", self._now(), thing_id, downloaded=(key,))
        return self._write_audited(work, [record])

    def seal_legacy_keys(self, *, batch: int = 500) -> int:
        """Encrypt plaintext keys of rows imported from the Go service; returns how many."""
        done = 0
        pick = (
            select(certs.c.serial, certs.c.client_key)
            .where(certs.c.client_key.is_not(None))
            .limit(batch)
        )
        store = (
            update(certs)
            .where(certs.c.serial == bindparam("b_serial"),
                   certs.c.client_key == bindparam("b_plain"))
            .values(private_key_enc=bindparam("b_sealed"), client_key=None)
        )
        while True:
            rows = self._tx.read(lambda conn: list(conn.execute(pick)))
            if not rows:
                return done
            params = [
                {"b_serial": r.serial, "b_plain": r.client_key,
                 "b_sealed": self._sealer.seal(r.client_key.encode(), r.serial.encode())}
                for r in rows
            ]

            def work(conn: Connection, params: list[dict[str, Any]] = params) -> None:
                conn.execute(store, params)

            self._tx.write(work)
            done += len(params)

    # ------------------------------------------------------------ revocation

    def revoke(
        self,
        serial: str,
        *,
        reason: RevocationReason = RevocationReason.UNSPECIFIED,
        at: datetime | None = None,
        audit: Audit | None = None,
        seal: SealCrl | None = None,
    ) -> Revocation:
        """Take the certificate out of the active set, destroy its key, record the revocation.

        NotFound for an unknown or already revoked serial. With ``seal``, the CRL listing the
        revocation is signed before the transaction commits (see ``SealCrl``).
        """
        key = _rows.lookup_serial(serial)
        revoked_at = _rows.aware(at, "at") if at is not None else self._now()
        return self._write_audited(
            lambda conn: self._revoke_in(conn, key, reason, revoked_at, None),
            lambda revocation: [_audit_record(audit, "revoke", revoked_at,
                                              revocation.thing_id, revoked=(key,),
                                              reason=reason.value)],
            seal=(lambda conn, revocation: self._seal_in(conn, seal, [revocation]))
            if seal is not None else None)

    def replace(
        self,
        old_serial: str,
        new: NewCertificate,
        *,
        reason: RevocationReason = RevocationReason.SUPERSEDED,
        event: NewEvent | None = None,
        audit: Audit | None = None,
        seal: SealCrl | None = None,
    ) -> Replacement:
        """Renew/rotate atomically: store ``new``, revoke the old one, append ``event``.

        Either all of it happens or nothing does. NotFound when the old certificate is unknown
        or already revoked (so a certificate is replaced at most once), NotOwner when it
        belongs to another thing than ``new.thing_id``, Conflict when the new serial exists.
        """
        old = _rows.lookup_serial(old_serial)
        serial = _rows.check_new(new)
        values = self._cert_values(serial, new)
        now = values["created_at"]
        event_values = self._event_values(event, now) if event is not None else None

        def work(conn: Connection) -> tuple[Revocation, int | None]:
            conn.execute(self._insert_cert, values)
            revocation = self._revoke_in(conn, old, reason, now, new.thing_id)
            event_id = None
            if event_values is not None:
                event_id = conn.execute(self._insert_event, event_values).scalar_one()
            return revocation, event_id

        record = _audit_record(audit, "replace", now, new.thing_id, issued=(serial,),
                               revoked=(old,), reason=reason.value)
        revocation, event_id = self._write_audited(
            work, [record],
            seal=(lambda conn, done: self._seal_in(conn, seal, [done[0]]))
            if seal is not None else None)
        return Replacement(self._new_record(serial, new, now), revocation, event_id)

    def _revoke_in(
        self,
        conn: Connection,
        serial: str,
        reason: RevocationReason,
        at: datetime,
        expect_thing: str | None,
    ) -> Revocation:
        row = _found(conn.execute(
            self._revoke_row, {"b_serial": serial, "b_at": at, "b_reason": reason.value}
        ).first(), serial)
        if expect_thing is not None and row.thing_id != expect_thing:
            raise NotOwner("certificate belongs to another thing")
        seq = conn.execute(self._bump_seq, {"b_at": at}).scalar_one()
        entry = (self._crl_entry(int(serial, row.serial_base), at, reason.value)
                 if self._crl_entry is not None else None)
        conn.execute(self._insert_revoked, {
            "seq": seq, "serial": serial, "thing_id": row.thing_id, "revoked_at": at,
            "reason": reason.value, "expires_at": row.expires_at, "serial_base": row.serial_base,
            "crl_entry": entry,
        })
        return Revocation(seq, serial, row.thing_id, at, reason, row.expires_at, entry)

    # ------------------------------------------------------------------- CRL

    def crl_entries(
        self, *, after_seq: int = 0, limit: int = 10000, now: datetime | None = None
    ) -> list[CrlEntry]:
        """Revoked, not yet expired entries with seq > after_seq, in seq (commit) order.

        Page through all of them with ``after_seq = entries[-1].seq``; a publisher that keeps
        the entries it has seen reads only the increment. Imported Go revocations have no
        expiry and are always included.
        """
        moment = _rows.aware(now, "now") if now is not None else self._now()
        params = {"b_after": after_seq, "b_now": moment, "b_limit": limit}
        rows = self._tx.read(lambda conn: conn.execute(_queries.CRL_ENTRIES, params).all())
        reason = _rows.reason
        return [
            CrlEntry(seq, serial, int(serial, base), revoked_at, reason(why), expires_at)
            for seq, serial, base, revoked_at, why, expires_at in rows
        ]

    def iter_crl_entries(
        self, *, now: datetime | None = None, batch: int = 10000, after_seq: int = 0
    ) -> Iterator[CrlEntry]:
        """All current CRL entries, fetched ``batch`` at a time (no transaction stays open)."""
        moment = now if now is not None else self._now()
        while True:
            entries = self.crl_entries(after_seq=after_seq, limit=batch, now=moment)
            yield from entries
            if len(entries) < batch:
                return
            after_seq = entries[-1].seq

    def crl_entry_block(self, *, after_seq: int, through_seq: int, limit: int = 250_000,
                        now: datetime | None = None) -> CrlEntryBlock:
        """The current revocations with after_seq < seq <= through_seq (the first ``limit`` of
        them) as one block: their stored CRL entries concatenated, and arrays of seqs, lengths
        (-1 for one stored without its entry: read it with ``crl_entries_missing`` and store
        the entry with ``keep_crl_entries``) and expiry times; one aggregated row on
        PostgreSQL instead of a row per revocation."""
        moment = _rows.aware(now, "now") if now is not None else self._now()
        params = {"b_after": after_seq, "b_through": through_seq, "b_now": moment,
                  "b_limit": limit}
        return self._tx.read(lambda conn: crl_block.read(conn, params))

    def crl_entries_missing(self, *, after_seq: int, through_seq: int,
                            now: datetime | None = None) -> list[CrlEntry]:
        """The current revocations with after_seq < seq <= through_seq stored without their
        CRL entry (revoked before migration 0006, or imported), in seq order."""
        moment = _rows.aware(now, "now") if now is not None else self._now()
        params = {"b_after": after_seq, "b_through": through_seq, "b_now": moment}
        rows = self._tx.read(lambda conn: conn.execute(
            _queries.CRL_ENTRIES_MISSING, params).all())
        reason = _rows.reason
        return [
            CrlEntry(seq, serial, int(serial, base), revoked_at, reason(why), expires_at)
            for seq, serial, base, revoked_at, why, expires_at in rows
        ]

    def keep_crl_entries(self, entries: dict[int, bytes]) -> None:
        """Store the CRL entries of revocations stored without one (by seq)."""
        if not entries:
            return

        def work(conn: Connection) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(_queries.KEEP_CRL_ENTRIES_PG,
                             {"b_seqs": list(entries), "b_ders": list(entries.values())})
            else:
                conn.execute(_queries.KEEP_CRL_ENTRY,
                             [{"b_seq": seq, "b_entry": der} for seq, der in entries.items()])

        self._tx.write(work)

    def crl_state(self) -> CrlState:
        """The last CRL number handed out and the newest revocation's seq."""
        stmt = select(crl_state.c.crl_number, crl_state.c.revocation_seq).where(
            crl_state.c.id == CRL_STATE_ID)
        row = self._tx.read(lambda conn: conn.execute(stmt).one())
        return CrlState(crl_number=row.crl_number, revocation_seq=row.revocation_seq)

    def next_crl_number(self, *, at_least: int = 1) -> int:
        """Atomically take the next CRL number: strictly increasing across processes.

        ``at_least`` lifts the number to a floor (e.g. above the Go service's wall-clock
        numbers after an import); it never goes down.
        """
        bumped = crl_state.c.crl_number + 1
        stmt = (
            update(crl_state)
            .where(crl_state.c.id == CRL_STATE_ID)
            .values(crl_number=case((bumped >= at_least, bumped), else_=at_least),
                    updated_at=self._now())
            .returning(crl_state.c.crl_number)
        )
        return int(self._tx.write(lambda conn: conn.execute(stmt).scalar_one()))

    def _seal_in(self, conn: Connection, seal: SealCrl,
                 revocations: Sequence[Revocation]) -> None:
        """Inside a revoking transaction: take the next CRL number, have ``seal`` sign the CRL
        that lists ``revocations``, and store it; an exception rolls the revocations back."""
        row = conn.execute(published.TAKE_NUMBER, {"b_at": self._now()}).one()
        header, der = seal(int(row.crl_number), int(row.revocation_seq), revocations)
        conn.execute(published.STORE, {
            "b_number": header.number, "b_seq": header.revocation_seq,
            "b_this": _rows.aware(header.this_update, "this_update"),
            "b_next": header.next_update, "b_entries": header.entries, "b_der": der})

    def take_crl_number(self) -> tuple[int, int]:
        """The next CRL number and, read in the same statement, the newest revocation's seq:
        the CRL signed with that number must cover every revocation up to it."""
        row = self._tx.write(lambda conn: conn.execute(
            published.TAKE_NUMBER, {"b_at": self._now()}).one())
        return int(row.crl_number), int(row.revocation_seq)

    def crl_outlook(self) -> published.CrlOutlook:
        """The newest revocation's seq and the stored CRL's header, in one small read."""
        row = self._tx.read(lambda conn: conn.execute(published.OUTLOOK).one())
        return published.CrlOutlook(int(row[0]), published.header(row[1:]))

    def stored_crl(self) -> tuple[published.StoredCrlHeader, bytes] | None:
        """The newest stored CRL and its DER; None before the first is stored."""
        row = self._tx.read(lambda conn: conn.execute(published.STORED).one())
        found = published.header(row)
        return (found, bytes(row.der)) if found is not None else None

    def store_crl(self, crl: published.StoredCrlHeader, der: bytes) -> bool:
        """Keep ``der`` as the service's CRL if its number is higher than the stored one's;
        whether it was."""
        _rows.aware(crl.this_update, "this_update")
        params = {"b_number": crl.number, "b_seq": crl.revocation_seq,
                  "b_this": crl.this_update, "b_next": crl.next_update,
                  "b_entries": crl.entries, "b_der": der}
        stored = self._tx.write(lambda conn: conn.execute(published.STORE, params).rowcount)
        return bool(stored)

    # ------------------------------------------------------------------ OCSP

    def serial_statuses(self, numbers: Sequence[int]) -> dict[int, published.SerialStatus]:
        """Active or revoked (time, reason) for each serial number this CA issued; a number
        missing from the answer was never issued here. Hex serials and the decimal ones
        imported from the Go service are both found."""
        forms = published.stored_forms(list(numbers))
        if not forms:
            return {}
        serials = sorted({serial for serial, _ in forms})
        rows = self._tx.read(lambda conn: conn.execute(
            published.STATUSES, {"b_serials": serials}).all())
        return published.statuses(rows, forms, _rows.reason)

    # -------------------------------------------------------------- rotation

    def claim_expiring(
        self,
        before: datetime,
        owner: str,
        *,
        limit: int = 100,
        lease: timedelta = timedelta(minutes=15),
        after: datetime | None = None,
        issued_before: datetime | None = None,
        following: Certificate | None = None,
        due_divisor: int | None = None,
    ) -> list[Certificate]:
        """Lease up to ``limit`` active certificates expiring before ``before`` (and, when
        given, after ``after``, and issued before ``issued_before``) to ``owner``, in
        (expires_at, serial) order.

        Certificates leased to someone else are skipped until the lease runs out (so a killed
        worker's claims come back). Two concurrent callers never get the same certificate.
        With ``following`` (the last certificate of the caller's previous batch) only those
        after it in that order are looked at: a run that claims batch after batch reads each
        candidate once, instead of stepping over all it holds each time. With ``due_divisor``
        only those with at most about 1/due_divisor of their lifetime (notBefore to expiry)
        left at ``after`` (or now) are taken, and all without a notBefore: the caller's own rule
        decides exactly, this keeps a run from leasing every certificate in the window.
        """
        now = self._now()
        window = [certs.c.expires_at < _rows.aware(before, "before")]
        if after is not None:
            window.append(certs.c.expires_at > _rows.aware(after, "after"))
        if issued_before is not None:
            window.append(certs.c.created_at < _rows.aware(issued_before, "issued_before"))
        if due_divisor is not None:
            window.append(self._may_be_due(due_divisor, after or now))
        if following is not None:
            last_expiry = _rows.aware(following.expires_at, "following.expires_at")
            last_serial = _rows.lookup_serial(following.serial)
            window += [certs.c.expires_at >= last_expiry,
                       or_(certs.c.expires_at > last_expiry, certs.c.serial > last_serial)]
        pick = (
            select(certs.c.serial)
            .where(_ACTIVE, *window,
                   or_(certs.c.lease_expires_at.is_(None), certs.c.lease_expires_at <= now))
            .order_by(certs.c.expires_at, certs.c.serial)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(certs)
            .where(certs.c.serial.in_(pick.scalar_subquery()))
            .values(lease_owner=owner, lease_expires_at=now + lease)
            .returning(*_rows.CERT_COLUMNS)
        )
        rows = self._tx.write(lambda conn: list(conn.execute(stmt)))
        claimed = [_rows.certificate(row) for row in rows]
        claimed.sort(key=lambda c: (c.expires_at, c.serial))
        return claimed

    def _may_be_due(self, divisor: int, moment: datetime) -> ColumnElement[bool]:
        """Remaining lifetime at ``moment`` times ``divisor`` at most the whole lifetime, with a
        second's margin so that rounding in SQL never drops a certificate that is due."""
        def seconds(value: ColumnElement[Any]) -> ColumnElement[Any]:
            return _queries.epoch_seconds(value, self._tx.dialect)

        expires, at = seconds(certs.c.expires_at), seconds(literal(moment, UTCDateTime()))
        lifetime = expires - seconds(certs.c.not_before)
        return or_(certs.c.not_before.is_(None),
                   (expires - at - _DUE_MARGIN_SECONDS) * divisor <= lifetime)

    def release_claims(self, serials: Iterable[str], owner: str) -> int:
        """Give back the leases ``owner`` holds on ``serials`` (a run's, at its end), a few
        hundred per statement; returns how many were held."""
        keys = sorted({_rows.lookup_serial(serial) for serial in serials})
        chunks = [keys[start:start + _RELEASE_CHUNK]
                  for start in range(0, len(keys), _RELEASE_CHUNK)]
        return sum(self._tx.write(functools.partial(_release, chunk=chunk, owner=owner))
                   for chunk in chunks)

    def release_claim(self, serial: str, owner: str) -> bool:
        """Give a lease back early (e.g. after a failed rotation); False if not held."""
        key = _rows.lookup_serial(serial)
        stmt = (
            update(certs)
            .where(certs.c.serial == key, certs.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
        return bool(self._tx.write(lambda conn: conn.execute(stmt).rowcount))

    # ---------------------------------------------------------------- outbox

    def append_event(self, event: NewEvent) -> int:
        """Append an event to the outbox on its own; returns its id."""
        values = self._event_values(event, self._now())
        return int(self._tx.write(lambda conn: conn.execute(self._insert_event, values)
                                  .scalar_one()))

    def pending_events(
        self,
        limit: int = 100,
        *,
        owner: str | None = None,
        lease: timedelta = timedelta(seconds=60),
    ) -> list[OutboxEvent]:
        """The oldest pending events, payloads decrypted.

        With ``owner`` the events are leased to it for ``lease`` (skipped by other drainers
        meanwhile, ``attempts`` counts the leases); without, they are only read.
        """
        cols = (outbox.c.id, outbox.c.event_key, outbox.c.subject, outbox.c.payload_enc,
                outbox.c.created_at, outbox.c.attempts)
        if owner is None:
            stmt: Any = select(*cols).order_by(outbox.c.id).limit(limit)
        else:
            now = self._now()
            pick = (
                select(outbox.c.id)
                .where(or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now))
                .order_by(outbox.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            stmt = (
                update(outbox)
                .where(outbox.c.id.in_(pick.scalar_subquery()))
                .values(lease_owner=owner, lease_expires_at=now + lease,
                        attempts=outbox.c.attempts + 1)
                .returning(*cols)
            )
        run = self._tx.read if owner is None else self._tx.write
        rows = run(lambda conn: list(conn.execute(stmt)))
        rows.sort(key=lambda r: r.id)
        events: list[OutboxEvent] = []
        failures: list[Exception] = []
        for r in rows:
            try:
                payload = self._sealer.open(r.payload_enc, _event_aad(r.event_key))
            except Exception as exc:  # noqa: BLE001 - one bad row must not block the others
                log.error("outbox event %d cannot be opened: %s", r.id, type(exc).__name__)
                failures.append(exc)
                continue
            events.append(OutboxEvent(id=r.id, subject=r.subject, payload=payload,
                                      created_at=r.created_at, attempts=r.attempts))
        if failures and not events:
            raise failures[0]
        return events

    def delete_events(self, ids: Sequence[int]) -> int:
        """Delete published events by id; returns how many were still there."""
        if not ids:
            return 0
        stmt = delete(outbox).where(outbox.c.id.in_(list(ids)))
        return int(self._tx.write(lambda conn: conn.execute(stmt).rowcount))

    def outbox_size(self) -> int:
        stmt = select(func.count()).select_from(outbox)
        return int(self._tx.read(lambda conn: conn.execute(stmt).scalar_one()))

    # --------------------------------------------------------------- helpers

    def _cert_values(self, serial: str, cert: NewCertificate) -> dict[str, Any]:
        sealed = None
        if cert.private_key_pem and not cert.device_key:
            sealed = self._sealer.seal(cert.private_key_pem.encode("utf-8"), serial.encode())
        return {
            "serial": serial, "thing_id": cert.thing_id, "owner_id": cert.owner_id,
            "expires_at": cert.expires_at, "not_before": cert.not_before,
            "client_cert": cert.certificate_pem, "client_key": None, "private_key_enc": sealed,
            "issuing_ca": None, "ca_chain": None, "private_key_type": cert.private_key_type,
            "key_bits": cert.key_bits, "downloaded": False, "created_at": self._now(),
            "serial_base": 16, "revoked_at": None, "revocation_reason": None,
            "lease_owner": None, "lease_expires_at": None, "device_key": cert.device_key,
        }

    def _event_values(self, event: NewEvent, now: datetime) -> dict[str, Any]:
        event_key = uuid.uuid4().hex
        return {
            "event_key": event_key, "subject": event.subject,
            "payload_enc": self._sealer.seal(event.payload, _event_aad(event_key)),
            "created_at": now, "attempts": 0, "lease_owner": None, "lease_expires_at": None,
        }

    @staticmethod
    def _new_record(serial: str, cert: NewCertificate, created_at: datetime) -> Certificate:
        return Certificate(
            serial=serial, thing_id=cert.thing_id, owner_id=cert.owner_id,
            certificate_pem=cert.certificate_pem, private_key_pem=cert.private_key_pem,
            private_key_type=cert.private_key_type, key_bits=cert.key_bits,
            issued_at=created_at, not_before=cert.not_before.astimezone(UTC),
            expires_at=cert.expires_at.astimezone(UTC), downloaded=False,
            device_key=cert.device_key,
        )

    def _open_key(self, row: Any) -> str | None:
        if row.private_key_enc is not None:
            return self._sealer.open(bytes(row.private_key_enc), row.serial.encode()).decode()
        return row.client_key or None

    # ------------------------------------------------------ revocation of things

    def revoke_things(
        self,
        thing_ids: Sequence[str],
        *,
        reason: RevocationReason = RevocationReason.CESSATION_OF_OPERATION,
        at: datetime | None = None,
        audit: Audit | None = None,
    ) -> list[Revocation]:
        """Revoke every active certificate of these things in one transaction (as ``revoke``
        does each); the revocations in seq order, none when they have no active certificate.

        The certificates are locked in serial order before any is revoked, so a concurrent
        revocation of one of them either commits first (and it is skipped here) or waits.
        """
        things = sorted({thing for thing in thing_ids if thing})
        if not things:
            return []
        revoked_at = _rows.aware(at, "at") if at is not None else self._now()
        pick = (
            select(certs.c.serial)
            .where(certs.c.thing_id.in_(bindparam("b_things", expanding=True)), _ACTIVE)
            .order_by(certs.c.serial)
            .with_for_update()
        )

        def work(conn: Connection) -> list[Revocation]:
            serials = conn.execute(pick, {"b_things": things}).scalars().all()
            return [self._revoke_in(conn, serial, reason, revoked_at, None)
                    for serial in serials]

        by = audit or Audit(actor="event", action="event_revoke")

        def records(revocations: list[Revocation]) -> list[AuditRecord]:
            if not revocations:
                return []
            return [_audit_record(by, "event_revoke", revoked_at, ",".join(things),
                                  revoked=tuple(r.serial for r in revocations),
                                  reason=reason.value)]

        return self._write_audited(work, records)


    # ---------------------------------------------------------------- audit

    def _write_audited(
        self, work: Callable[[Connection], T],
        records: Sequence[AuditRecord] | Callable[[T], Sequence[AuditRecord]],
        seal: Callable[[Connection, T], None] | None = None,
        *, alongside: audit.Alongside | None = None, params: dict[str, Any] | None = None,
    ) -> T:
        """Run ``work``, then ``seal`` (the CRL signed before COMMIT), and append the audit
        records in the same transaction (last, so the chain head is locked only until
        COMMIT), with ``alongside`` and its ``params``; subscribers hear of them after it."""

        def audited(conn: Connection) -> tuple[T, list[AuditRecord]]:
            result = work(conn)
            if seal is not None:
                seal(conn, result)
            made = records(result) if callable(records) else records
            return result, audit.append(conn, made, alongside=alongside, params=params)

        result, written = self._tx.write(audited)
        audit.committed(written)
        return result

    def audit_records(self, *, after_seq: int = 0, limit: int = 1000,
                      thing_id: str | None = None, since: datetime | None = None
                      ) -> list[AuditRecord]:
        """A page of the audit trail in seq order (``since``: at or after that time)."""
        moment = audit.timestamp(_rows.aware(since, "since")) if since is not None else None
        return self._tx.read(lambda conn: audit.read_records(
            conn, after_seq=after_seq, limit=limit, thing_id=thing_id, since=moment))

    def audit_head(self) -> tuple[int, str]:
        """The audit chain's last seq and hash."""
        return self._tx.read(audit.read_head)

    def count_expiring(self, before: datetime, *, now: datetime | None = None) -> int:
        """Active, unexpired certificates whose expires_at is before ``before``."""
        moment = _rows.aware(now, "now") if now is not None else self._now()
        stmt = select(func.count()).select_from(certs).where(
            _ACTIVE, certs.c.expires_at > moment,
            certs.c.expires_at <= _rows.aware(before, "before"))
        return int(self._tx.read(lambda conn: conn.execute(stmt).scalar_one()))


def _found(row: Any, serial: str) -> Any:
    """``row`` of the active certificate ``serial``; NotFound when there is none."""
    if row is None:
        raise NotFound(f"no active certificate with serial {serial}")
    return row


def _page_request(thing_id: str, offset: int = 0, limit: int = 10, serial: str | None = None,
                  expires_from: datetime | None = None, expires_to: datetime | None = None
                  ) -> tuple[tuple[bool, bool, bool], dict[str, Any]]:
    """The shape of a thing's page query (which filters it has) and its parameters."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    params: dict[str, Any] = {"b_thing": thing_id, "b_offset": offset, "b_limit": limit}
    if serial:
        params["b_pattern"] = _queries.like_pattern(serial.strip().lower())
    if expires_from is not None:
        params["b_from"] = _rows.aware(expires_from, "expires_from")
    if expires_to is not None:
        params["b_to"] = _rows.aware(expires_to, "expires_to")
    return (bool(serial), expires_from is not None, expires_to is not None), params




def _audit_record(by: Audit | None, action: str, at: datetime, thing_id: str, *,
                  issued: Sequence[str] = (), revoked: Sequence[str] = (),
                  downloaded: Sequence[str] = (), reason: str | None = None) -> AuditRecord:
    """The record of a change; without ``by`` the operator made it as ``action``."""
    return audit.record_for(by or Audit(actor="operator", action=action), at, thing_id,
                            issued=issued, revoked=revoked, downloaded=downloaded,
                            reason=reason)


_CERT_NAMES = tuple(column.name for column in certs.columns)


@functools.lru_cache(maxsize=64)
def _insert_certs(count: int) -> audit.Alongside:
    """``count`` new rows of certs in one INSERT, each value bound with its column's type."""
    rows = ", ".join("(" + ", ".join(f":{name}_{index}" for name in _CERT_NAMES) + ")"
                     for index in range(count))
    binds = tuple(bindparam(f"{name}_{index}", type_=certs.c[name].type)
                  for index in range(count) for name in _CERT_NAMES)
    return audit.Alongside(f"INSERT INTO certs ({', '.join(_CERT_NAMES)}) VALUES {rows}", binds)


def _nothing(conn: Connection) -> None:
    """The work of a transaction whose change is written alongside its audit records."""


def _event_aad(event_key: str) -> bytes:
    return b"outbox:" + event_key.encode()


def _release(conn: Connection, *, chunk: list[str], owner: str) -> int:
    """Clears ``owner``'s leases on the certificates stored as ``chunk``."""
    stmt = (
        update(certs)
        .where(certs.c.serial.in_(chunk), certs.c.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    return int(conn.execute(stmt).rowcount)
