"""The stored CRL entries read as blocks (one aggregated row on PostgreSQL, rows on SQLite), the
publisher's compact cache of them, and CRLs built from them: the same revocations in the same
order as the row-by-row read, on both backends."""

import math
import random
import time
from array import array
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import or_, select, update

import authority.crl_publisher as crl_publisher
from authority.crl_entries import RevokedEntries
from authority.crl_publisher import CrlPublisher
from hsm.authority import CertificateAuthority
from hsm.crl import revoked_entry
from repository import RevocationReason, Store
from repository.crl_block import CrlEntryBlock
from repository.schema import revoked_certs
from tests.repository.helpers import make_cert
from tests.scheduler.helpers import bulk_revocations


def _encoder(number: int, at: datetime, reason: str) -> bytes:
    """A stand-in entry: distinct bytes of varying length for each revocation."""
    return f"{number:x}|{int(at.timestamp())}|{reason}".encode()


def _stored(store: Store, *, after: int, now: datetime
            ) -> list[tuple[int, bytes | None, datetime | None]]:
    """The current revocations after ``after``, row by row, straight from the table."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(revoked_certs.c.seq, revoked_certs.c.crl_entry, revoked_certs.c.expires_at)
            .where(revoked_certs.c.seq > after,
                   or_(revoked_certs.c.expires_at.is_(None), revoked_certs.c.expires_at > now))
            .order_by(revoked_certs.c.seq)).all()
    return [(seq, None if der is None else bytes(der), expires) for seq, der, expires in rows]


def _reference(store: Store, *, after: int, through: int, limit: int, now: datetime
               ) -> tuple[list[int], list[int], list[float], bytes]:
    rows = [row for row in _stored(store, after=after, now=now) if row[0] <= through][:limit]
    return ([seq for seq, _, _ in rows],
            [-1 if der is None else len(der) for _, der, _ in rows],
            [math.inf if expires is None else expires.timestamp() for _, _, expires in rows],
            b"".join(der for _, der, _ in rows if der is not None))


def _listed(block: CrlEntryBlock) -> tuple[list[int], list[int], list[float], bytes]:
    return list(block.seqs), list(block.lengths), list(block.expiry), block.der


def test_block_is_the_rows_read_at_once(store: Store) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # Revoked before entries were stored (as before migration 0006), then with them.
    early = [store.save(make_cert("t", expires_at=now + timedelta(days=30))) for _ in range(3)]
    for cert in early:
        store.revoke(cert.serial)
    store.encode_crl_entries(_encoder)
    short = store.save(make_cert("t", expires_at=now + timedelta(hours=1)))
    store.revoke(short.serial, reason=RevocationReason.KEY_COMPROMISE)
    later = [store.save(make_cert("t", expires_at=now + timedelta(days=30))) for _ in range(4)]
    for cert in later:
        store.revoke(cert.serial)
    top = store.crl_state().revocation_seq
    assert top == 8

    whole = store.crl_entry_block(after_seq=0, through_seq=top, now=now)
    assert _listed(whole) == _reference(store, after=0, through=top, limit=100, now=now)
    assert list(whole.seqs) == list(range(1, 9))
    assert list(whole.lengths)[:3] == [-1, -1, -1] and whole.missing
    assert _encoder(int(short.serial, 16), revoked_at(store, 4), "key_compromise") in whole.der
    for after, through, limit in [(0, 5, 100), (3, top, 100), (0, top, 2), (2, 6, 3),
                                  (top, top, 100), (5, 4, 100)]:
        block = store.crl_entry_block(after_seq=after, through_seq=through, limit=limit,
                                      now=now)
        assert _listed(block) == _reference(store, after=after, through=through, limit=limit,
                                            now=now)
    # Two hours on, the short-lived certificate has expired and leaves the block.
    on = now + timedelta(hours=2)
    block = store.crl_entry_block(after_seq=0, through_seq=top, now=on)
    assert short.serial not in block.der.decode(errors="replace")
    assert list(block.seqs) == [1, 2, 3, 5, 6, 7, 8]
    assert _listed(block) == _reference(store, after=0, through=top, limit=100, now=on)
    assert not store.crl_entry_block(after_seq=3, through_seq=top, now=now).missing


def test_block_of_many_in_seq_order_after_rows_moved(store: Store) -> None:
    """Filling in entries rewrites rows (on PostgreSQL they move in the heap): a block still
    comes in seq order."""
    top = bulk_revocations(store.engine, 3000)
    picked = random.Random(5).sample(range(1, top + 1), 1500)
    store.keep_crl_entries({seq: f"entry-{seq}".encode() for seq in picked})
    now = datetime.now(UTC)
    for after, limit in [(0, 10_000), (0, 1000), (1000, 1000), (2500, 1000)]:
        block = store.crl_entry_block(after_seq=after, through_seq=top, limit=limit, now=now)
        assert _listed(block) == _reference(store, after=after, through=top, limit=limit,
                                            now=now)
        assert list(block.seqs) == list(range(after + 1, min(after + limit, top) + 1))


def _block(seqs: list[int], expiry: list[float]) -> CrlEntryBlock:
    ders = [f"<{seq}:{'x' * (seq % 7)}>".encode() for seq in seqs]
    return CrlEntryBlock(array("q", seqs), array("q", [len(d) for d in ders]),
                         array("d", expiry), b"".join(ders))


def test_revoked_entries_drop_the_expired_and_cut_at_a_seq() -> None:
    shuffle = random.Random(11)
    entries = RevokedEntries()
    kept: list[tuple[int, float]] = []
    seq = 0
    for _ in range(6):
        seqs = [seq + step for step in range(1, 200)]
        seq = seqs[-1]
        expiry = [shuffle.choice([10.0, 20.0, 30.0, math.inf]) for _ in seqs]
        entries.append(_block(seqs, expiry))
        kept += list(zip(seqs, expiry, strict=True))
    for now in [5.0, 10.0, 10.5, 25.0, 29.9, 30.0, 1e12]:
        entries.drop_expired(now)
        kept = [(s, e) for s, e in kept if e > now]
        assert len(entries) == len(kept)
        for cut in [0, 1, 150, 600, seq, seq + 5]:
            listed = [s for s, _ in kept if s <= cut]
            der, count = entries.upto(cut)
            assert count == len(listed)
            assert der == _block(listed, [0.0] * len(listed)).der
    assert len(entries) > 1
    with pytest.raises(ValueError):
        entries.append(_block([1], [math.inf]))  # not above the ones held


def _serials(der: bytes) -> list[int]:
    return [entry.serial_number for entry in x509.load_der_x509_crl(der)]


def test_crl_from_blocks_lists_exactly_the_current_revocations(
    store: Store, authority: CertificateAuthority, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Revocations without a stored entry, with one, expired, soon expiring, read over many
    blocks: each CRL lists exactly the unexpired ones in seq order, and a new process builds
    the same list."""
    monkeypatch.setattr(crl_publisher, "READ_BATCH", 64)
    now = datetime.now(UTC).replace(microsecond=0)
    top = bulk_revocations(store.engine, 500)  # no entries stored, like rows before 0006
    with store.engine.begin() as conn:
        conn.execute(update(revoked_certs).where(revoked_certs.c.seq % 50 == 0)
                     .values(expires_at=now - timedelta(hours=1)))
        conn.execute(update(revoked_certs).where(revoked_certs.c.seq == 7)
                     .values(expires_at=now + timedelta(seconds=3)))
    expected = [(1 << 150) + seq for seq in range(1, top + 1) if seq % 50]
    path = tmp_path / "crl.pem"
    first = CrlPublisher(authority, store, str(path), timedelta(hours=24))
    crl = first.publish()
    assert _serials(crl.der) == expected
    assert crl.entries == len(expected)

    # The entries are stored now; another process reads them in blocks and lists the same.
    assert not store.crl_entry_block(after_seq=0, through_seq=top, now=now).missing
    again = CrlPublisher(authority, store, str(path), timedelta(hours=24)).publish()
    assert _serials(again.der) == expected and again.number == crl.number + 1

    # Revocations after it, one of them through the revoking path, after seq 7 expired.
    time.sleep(max(0.0, (now + timedelta(seconds=3.2) - datetime.now(UTC)).total_seconds()))
    added = []
    for _ in range(3):
        cert = store.save(make_cert("t", expires_at=now + timedelta(days=3)))
        added.append(int(cert.serial, 16))
        store.revoke(cert.serial)
    cert = store.save(make_cert("t", expires_at=now + timedelta(days=3)))
    added.append(int(cert.serial, 16))
    revocation = first.revoking(lambda seal: store.revoke(cert.serial, seal=seal))
    current = [n for n in expected if n != (1 << 150) + 7] + added
    assert first.current is not None and _serials(first.current.der) == current
    assert first.current.revocation_seq == revocation.seq
    fresh = CrlPublisher(authority, store, str(path), timedelta(hours=24)).publish()
    assert _serials(fresh.der) == current
    assert entry_of(store, top + 1) == revoked_entry(added[0], revoked_at(store, top + 1),
                                                     "unspecified")


def entry_of(store: Store, seq: int) -> bytes | None:
    return dict((s, d) for s, d, _ in _stored(store, after=seq - 1,
                                              now=datetime.now(UTC)))[seq]


def revoked_at(store: Store, seq: int) -> datetime:
    return next(e.revoked_at for e in store.crl_entries(after_seq=seq - 1, limit=1))
