"""Every store operation, on SQLite and on PostgreSQL (the ``db_url`` fixture runs both)."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text, update

from repository import (
    AlreadyDownloaded,
    Conflict,
    NewEvent,
    NotFound,
    NotOwner,
    RevocationReason,
    Store,
    create_engine_for,
    migrate,
)
from repository.schema import certs, outbox, revoked_certs
from tests.repository.conftest import Clock
from tests.repository.helpers import SEAL_ERRORS, SoftwareSealer, make_cert, new_serial

NOW = datetime.now(UTC).replace(microsecond=0)


def _raw_cert(store: Store, serial: str) -> dict[str, object]:
    with store.engine.connect() as conn:
        row = conn.execute(select(certs).where(certs.c.serial == serial)).mappings().one()
    return dict(row)


# ------------------------------------------------------------------ save / get


def test_save_then_get_returns_the_record(store: Store) -> None:
    new = make_cert("thing-a", owner_id="alice")
    saved = store.save(new)
    assert saved.private_key_pem == new.private_key_pem

    got = store.get(new.serial)
    assert got.serial == new.serial
    assert got.thing_id == "thing-a"
    assert got.owner_id == "alice"
    assert got.certificate_pem == new.certificate_pem
    assert got.private_key_pem is None  # not asked for
    assert (got.private_key_type, got.key_bits) == ("ec", 256)
    assert got.expires_at == new.expires_at and got.expires_at.tzinfo is not None
    assert got.expires_at.utcoffset() == timedelta(0)
    assert got.not_before == new.not_before
    assert got.issued_at.utcoffset() == timedelta(0)
    assert abs(got.issued_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert got.downloaded is False
    assert got == saved.__class__(**{**_fields(saved), "private_key_pem": None,
                                     "issued_at": got.issued_at})

    with_key = store.get(new.serial, with_key=True)
    assert with_key.private_key_pem == new.private_key_pem


def _fields(record: object) -> dict[str, object]:
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]


def test_get_accepts_upper_case_and_surrounding_space(store: Store) -> None:
    new = make_cert()
    store.save(new)
    assert store.get(f"  {new.serial.upper()} ").serial == new.serial


def test_serial_is_stored_lower_case(store: Store) -> None:
    serial = new_serial()
    saved = store.save(make_cert(serial=serial.upper()))
    assert saved.serial == serial
    assert store.get(serial).serial == serial


def test_get_unknown_or_malformed_serial_is_not_found(store: Store) -> None:
    store.save(make_cert())
    for serial in (new_serial(), "", "xyz", "a" * 65, "12:34", "'; DROP TABLE certs; --"):
        with pytest.raises(NotFound):
            store.get(serial)


def test_duplicate_serial_is_a_conflict_and_changes_nothing(store: Store) -> None:
    first = make_cert("thing-a")
    store.save(first)
    with pytest.raises(Conflict):
        store.save(make_cert("thing-b", serial=first.serial))
    assert store.get(first.serial).thing_id == "thing-a"


def test_save_many_stores_every_certificate_with_its_own_key(store: Store) -> None:
    batch = [make_cert(f"thing-{i % 3}") for i in range(10)]
    saved = store.save_many(batch)
    assert [record.serial for record in saved] == [cert.serial for cert in batch]
    for cert in batch:
        got = store.get(cert.serial, with_key=True)
        assert (got.thing_id, got.certificate_pem, got.private_key_pem) == \
            (cert.thing_id, cert.certificate_pem, cert.private_key_pem)
    assert store.save_many([]) == []


def test_save_many_with_one_existing_serial_stores_none_of_them(store: Store) -> None:
    first = make_cert("thing-a")
    store.save(first)
    batch = [make_cert("thing-b"), make_cert("thing-b", serial=first.serial), make_cert("thing-b")]
    with pytest.raises(Conflict):
        store.save_many(batch)
    assert store.get(first.serial).thing_id == "thing-a"
    for cert in (batch[0], batch[2]):
        with pytest.raises(NotFound):
            store.get(cert.serial)


def test_save_rejects_bad_input(store: Store) -> None:
    good = make_cert()
    cases = [
        {"serial": "not-hex"},
        {"private_key_type": "dsa"},
        {"thing_id": ""},
        {"key_bits": 0},
        {"expires_at": datetime(2030, 1, 1)},  # naive
    ]
    for change in cases:
        with pytest.raises(ValueError):
            store.save(good.__class__(**{**_fields(good), **change}))
    with pytest.raises(NotFound):
        store.get(good.serial)


def test_times_in_other_zones_are_stored_as_the_same_instant(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    expires = datetime(2031, 6, 1, 12, 0, 0, tzinfo=plus_two)
    new = make_cert("thing-z", expires_at=expires)
    store.save(new)
    got = store.get(new.serial)
    assert got.expires_at == expires
    assert got.expires_at.tzinfo == UTC
    assert got.expires_at.hour == 10
    # A bound given in +02:00 compares as the same instant on both backends.
    assert store.list_by_thing("thing-z", expires_to=expires).total == 1
    assert store.list_by_thing("thing-z", expires_to=expires - timedelta(seconds=1)).total == 0


# ------------------------------------------------------------------------ paging


def test_list_by_thing_orders_by_expiry_then_serial_and_pages(store: Store) -> None:
    expiries = [NOW + timedelta(days=d) for d in (5, 1, 3, 3, 2, 4, 3)]
    saved = [store.save(make_cert("thing-p", expires_at=e)) for e in expiries]
    store.save(make_cert("thing-other", expires_at=NOW + timedelta(days=1)))
    expected = [c.serial for c in sorted(saved, key=lambda c: (c.expires_at, c.serial))]

    page = store.list_by_thing("thing-p", offset=0, limit=3)
    assert (page.total, page.offset, page.limit) == (7, 0, 3)
    assert [c.serial for c in page.items] == expected[:3]
    assert all(c.private_key_pem is None and c.thing_id == "thing-p" for c in page.items)

    page = store.list_by_thing("thing-p", offset=3, limit=3)
    assert [c.serial for c in page.items] == expected[3:6]
    page = store.list_by_thing("thing-p", offset=6, limit=3)
    assert [c.serial for c in page.items] == expected[6:] and page.total == 7
    page = store.list_by_thing("thing-p", offset=10, limit=3)
    assert page.items == () and page.total == 7
    page = store.list_by_thing("thing-p", offset=0, limit=0)
    assert page.items == () and page.total == 7
    assert store.list_by_thing("nobody").total == 0
    with pytest.raises(ValueError):
        store.list_by_thing("thing-p", offset=-1)


def test_list_by_thing_filters(store: Store) -> None:
    serials = ["aa11bb", "cc11dd", "ee22ff", "ab_c%", ]
    made = {}
    for i, serial in enumerate(serials[:3]):
        made[serial] = store.save(make_cert("thing-f", serial=serial,
                                            expires_at=NOW + timedelta(days=10 * (i + 1))))
    assert {c.serial for c in store.list_by_thing("thing-f", serial="11").items} == {
        "aa11bb", "cc11dd"}
    assert [c.serial for c in store.list_by_thing("thing-f", serial="BB").items] == ["aa11bb"]
    # LIKE wildcards in the filter are taken literally.
    assert store.list_by_thing("thing-f", serial="%").total == 0
    assert store.list_by_thing("thing-f", serial="_").total == 0

    day20 = made["cc11dd"].expires_at
    page = store.list_by_thing("thing-f", expires_from=day20)
    assert [c.serial for c in page.items] == ["cc11dd", "ee22ff"]
    page = store.list_by_thing("thing-f", expires_to=day20)
    assert [c.serial for c in page.items] == ["aa11bb", "cc11dd"]
    page = store.list_by_thing("thing-f", expires_from=day20, expires_to=day20, serial="cc")
    assert page.total == 1 and page.items[0].serial == "cc11dd"
    page = store.list_by_thing("thing-f", serial="11", expires_from=day20 + timedelta(seconds=1))
    assert page.total == 0


def test_revoked_certificates_are_not_listed(store: Store) -> None:
    keep = store.save(make_cert("thing-r"))
    gone = store.save(make_cert("thing-r"))
    store.revoke(gone.serial)
    page = store.list_by_thing("thing-r")
    assert page.total == 1 and [c.serial for c in page.items] == [keep.serial]


# --------------------------------------------------------------------- revoke


def test_revoke_removes_from_active_set_and_destroys_the_key(store: Store) -> None:
    new = make_cert("thing-v")
    store.save(new)
    at = NOW + timedelta(seconds=5)
    revocation = store.revoke(new.serial.upper(), reason=RevocationReason.KEY_COMPROMISE, at=at)
    assert revocation.serial == new.serial and revocation.thing_id == "thing-v"
    assert revocation.revoked_at == at and revocation.reason is RevocationReason.KEY_COMPROMISE
    assert revocation.expires_at == new.expires_at and revocation.seq == 1

    with pytest.raises(NotFound):
        store.get(new.serial)
    with pytest.raises(NotFound):
        store.revoke(new.serial)
    with pytest.raises(NotFound):
        store.revoke(new_serial())

    raw = _raw_cert(store, new.serial)
    assert raw["private_key_enc"] is None and raw["client_key"] is None
    assert raw["revoked_at"] == at and raw["revocation_reason"] == "key_compromise"
    with store.engine.connect() as conn:
        row = conn.execute(select(revoked_certs)).mappings().one()
    assert (row["serial"], row["thing_id"], row["reason"]) == (new.serial, "thing-v",
                                                                "key_compromise")
    assert row["revoked_at"] == at


def test_crl_entries_list_revoked_unexpired_in_commit_order(store: Store) -> None:
    short = store.save(make_cert("c", expires_at=NOW + timedelta(hours=1)))
    longs = [store.save(make_cert("c", expires_at=NOW + timedelta(days=30))) for _ in range(4)]
    never = store.save(make_cert("c"))
    store.revoke(short.serial, reason=RevocationReason.SUPERSEDED)
    for c in longs:
        store.revoke(c.serial)

    entries = store.crl_entries()
    assert [e.serial for e in entries] == [short.serial] + [c.serial for c in longs]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].reason is RevocationReason.SUPERSEDED
    assert entries[1].reason is RevocationReason.UNSPECIFIED
    assert entries[0].serial_number == int(short.serial, 16)
    assert all(e.revoked_at.utcoffset() == timedelta(0) for e in entries)
    assert never.serial not in {e.serial for e in entries}

    # Two hours on, the short-lived certificate has expired and leaves the CRL.
    later = store.crl_entries(now=NOW + timedelta(hours=2))
    assert [e.serial for e in later] == [c.serial for c in longs]

    # Increments: only what was revoked after the last seen seq.
    assert store.crl_entries(after_seq=5) == []
    assert [e.seq for e in store.crl_entries(after_seq=3)] == [4, 5]
    extra = store.save(make_cert("c", expires_at=NOW + timedelta(days=30)))
    store.revoke(extra.serial)
    assert [e.serial for e in store.crl_entries(after_seq=5)] == [extra.serial]
    assert store.crl_state().revocation_seq == 6

    # Paging through everything gives the same as one read.
    assert [e.seq for e in store.iter_crl_entries(batch=2)] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in store.crl_entries(limit=2)] == [1, 2]


def test_crl_numbers_only_grow(store: Store) -> None:
    assert store.crl_state().crl_number == 0
    numbers = [store.next_crl_number() for _ in range(5)]
    assert numbers == [1, 2, 3, 4, 5]
    assert store.next_crl_number(at_least=1_700_000_000) == 1_700_000_000
    assert store.next_crl_number(at_least=10) == 1_700_000_001
    assert store.crl_state().crl_number == 1_700_000_001


# -------------------------------------------------------------------- replace


def test_replace_stores_new_revokes_old_and_appends_event(store: Store) -> None:
    old = store.save(make_cert("thing-x"))
    new = make_cert("thing-x")
    result = store.replace(old.serial.upper(), new,
                           event=NewEvent("things.thing-x.commands.cert-rotation", b"{}"))
    assert result.certificate.serial == new.serial
    assert result.certificate.private_key_pem == new.private_key_pem
    assert result.revocation.serial == old.serial
    assert result.revocation.reason is RevocationReason.SUPERSEDED
    assert result.event_id is not None

    assert store.get(new.serial, with_key=True).private_key_pem == new.private_key_pem
    with pytest.raises(NotFound):
        store.get(old.serial)
    assert [e.serial for e in store.crl_entries()] == [old.serial]
    events = store.pending_events()
    assert [(e.id, e.subject, e.payload) for e in events] == [
        (result.event_id, "things.thing-x.commands.cert-rotation", b"{}")]
    # A second replacement of the same certificate finds nothing to replace.
    with pytest.raises(NotFound):
        store.replace(old.serial, make_cert("thing-x"))


def _snapshot(store: Store) -> tuple[object, ...]:
    with store.engine.connect() as conn:
        return (
            sorted(conn.execute(select(certs.c.serial, certs.c.revoked_at)).all()),
            conn.execute(select(revoked_certs.c.serial)).all(),
            conn.execute(text("SELECT count(*) FROM outbox")).scalar_one(),
            store.crl_state(),
        )


def test_replace_is_all_or_nothing(store: Store) -> None:
    old = store.save(make_cert("thing-y"))
    other = store.save(make_cert("thing-other"))
    event = NewEvent("s", b"payload")
    before = _snapshot(store)

    # New serial already taken: the old one must stay active, no event, no revocation.
    with pytest.raises(Conflict):
        store.replace(old.serial, make_cert("thing-y", serial=other.serial), event=event)
    assert _snapshot(store) == before

    # Old certificate unknown: the new one must not be stored.
    orphan = make_cert("thing-y")
    with pytest.raises(NotFound):
        store.replace(new_serial(), orphan, event=event)
    with pytest.raises(NotFound):
        store.get(orphan.serial)

    # Old certificate belongs to another thing.
    with pytest.raises(NotOwner):
        store.replace(other.serial, make_cert("thing-y"), event=event)
    assert _snapshot(store) == before
    assert store.get(old.serial).serial == old.serial


def test_replace_keeps_the_revocation_reason_given(store: Store) -> None:
    old = store.save(make_cert("thing-k"))
    result = store.replace(old.serial, make_cert("thing-k"),
                           reason=RevocationReason.KEY_COMPROMISE)
    assert store.crl_entries()[0].reason is RevocationReason.KEY_COMPROMISE
    assert result.event_id is None and store.outbox_size() == 0


# ---------------------------------------------------------------- download


def test_mark_downloaded_hands_the_key_out_once(store: Store) -> None:
    new = make_cert("thing-d")
    store.save(new)
    with pytest.raises(NotOwner):
        store.mark_downloaded(new.serial, "thing-intruder")
    assert store.get(new.serial).downloaded is False

    got = store.mark_downloaded(new.serial.upper(), "thing-d")
    assert got.private_key_pem == new.private_key_pem and got.downloaded is True
    assert got.certificate_pem == new.certificate_pem

    with pytest.raises(AlreadyDownloaded):
        store.mark_downloaded(new.serial, "thing-d")
    view = store.get(new.serial, with_key=True)
    assert view.downloaded is True and view.private_key_pem is None  # key destroyed
    assert _raw_cert(store, new.serial)["private_key_enc"] is None
    with pytest.raises(NotFound):
        store.mark_downloaded(new_serial(), "thing-d")


def test_revoked_certificate_cannot_be_downloaded(store: Store) -> None:
    new = store.save(make_cert("thing-d"))
    store.revoke(new.serial)
    with pytest.raises(NotFound):
        store.mark_downloaded(new.serial, "thing-d")


def test_a_key_sealed_for_one_serial_does_not_open_under_another(store: Store) -> None:
    a = store.save(make_cert("thing-s"))
    b = store.save(make_cert("thing-s"))
    with store.engine.begin() as conn:
        sealed_a = conn.execute(select(certs.c.private_key_enc)
                                .where(certs.c.serial == a.serial)).scalar_one()
        conn.execute(update(certs).where(certs.c.serial == b.serial)
                     .values(private_key_enc=sealed_a))
    assert store.get(a.serial, with_key=True).private_key_pem == a.private_key_pem
    with pytest.raises(SEAL_ERRORS):
        store.get(b.serial, with_key=True)
    # A failed download does not consume the one download.
    with pytest.raises(SEAL_ERRORS):
        store.mark_downloaded(b.serial, "thing-s")
    assert store.get(b.serial).downloaded is False


# ------------------------------------------------------------------ rotation


def test_claims_are_exclusive_until_the_lease_runs_out(store: Store, clock: Clock) -> None:
    due = [store.save(make_cert(f"t{i}", expires_at=NOW + timedelta(days=i + 1)))
           for i in range(5)]
    store.save(make_cert("later", expires_at=NOW + timedelta(days=90)))
    horizon = NOW + timedelta(days=30)

    first = store.claim_expiring(horizon, "worker-a", limit=3,
                                 lease=timedelta(minutes=10))
    assert [c.serial for c in first] == [c.serial for c in due[:3]]
    second = store.claim_expiring(horizon, "worker-b", limit=10)
    assert [c.serial for c in second] == [c.serial for c in due[3:]]
    assert store.claim_expiring(horizon, "worker-c") == []

    # worker-a gives one back; it is claimable at once. The rest come back after the lease.
    assert store.release_claim(due[0].serial, "worker-a") is True
    assert store.release_claim(due[1].serial, "worker-c") is False
    assert [c.serial for c in store.claim_expiring(horizon, "worker-c")] == [due[0].serial]
    clock.offset_seconds = 11 * 60
    reclaimed = store.claim_expiring(horizon, "worker-d")
    assert {c.serial for c in reclaimed} >= {due[1].serial, due[2].serial}


def test_a_run_claims_batch_after_batch_in_expiry_order_and_only_what_was_issued_before_it(
        store: Store, clock: Clock) -> None:
    tied = NOW + timedelta(days=2)
    saved = [store.save(make_cert(
        f"t{i}", expires_at=tied if i % 2 else NOW + timedelta(days=i + 1))) for i in range(7)]
    started = datetime.now(UTC) + timedelta(seconds=30)
    clock.offset_seconds = 60
    store.save(make_cert("issued-during-the-run", expires_at=NOW + timedelta(days=1)))
    horizon = NOW + timedelta(days=30)

    batches: list[list[str]] = []
    last = None
    while batch := store.claim_expiring(horizon, "run", limit=3, issued_before=started,
                                        following=last):
        batches.append([c.serial for c in batch])
        last = batch[-1]
    claimed = [serial for batch in batches for serial in batch]
    expected = sorted(saved, key=lambda c: (c.expires_at, c.serial.lower()))
    assert claimed == [c.serial for c in expected]
    assert [len(batch) for batch in batches] == [3, 3, 1]

    # Given back in one call, they are claimable again; the late one was never leased.
    assert store.release_claims([*claimed, "ab" * 8], "run") == len(saved)
    assert store.release_claims(claimed, "run") == 0
    again = store.claim_expiring(horizon, "next", limit=100)
    assert len(again) == len(saved) + 1


def test_a_claim_with_a_due_divisor_leaves_certificates_with_more_lifetime_left(
        store: Store) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    hours = timedelta(hours=1)

    def issued(thing: str, lived: timedelta, left: timedelta) -> str:
        new = replace(make_cert(thing, expires_at=now + left), not_before=now - lived)
        return store.save(new).serial

    due = issued("due", 80 * hours, 20 * hours)  # a fifth of its lifetime left
    at_the_line = issued("line", 60 * hours, 30 * hours)  # exactly a third
    issued("fresh", 10 * hours, 90 * hours)
    issued("half", 50 * hours, 50 * hours)
    claimed = store.claim_expiring(now + timedelta(days=30), "run", after=now, due_divisor=3)
    assert {c.serial for c in claimed} == {due, at_the_line}
    everything = store.claim_expiring(now + timedelta(days=30), "other", after=now)
    assert len(everything) == 2


def test_revoked_certificates_are_not_claimed(store: Store) -> None:
    cert = store.save(make_cert("t", expires_at=NOW + timedelta(days=1)))
    store.revoke(cert.serial)
    assert store.claim_expiring(NOW + timedelta(days=30), "w") == []


# -------------------------------------------------------------------- outbox


def test_outbox_drains_oldest_first_and_deletes_by_id(store: Store, clock: Clock) -> None:
    ids = [store.append_event(NewEvent(f"subject.{i}", f"payload {i}".encode()))
           for i in range(5)]
    assert ids == sorted(ids) and store.outbox_size() == 5

    peek = store.pending_events(limit=2)
    assert [(e.id, e.subject, e.payload) for e in peek] == [
        (ids[0], "subject.0", b"payload 0"), (ids[1], "subject.1", b"payload 1")]
    assert peek[0].created_at.utcoffset() == timedelta(0)

    leased = store.pending_events(limit=3, owner="drainer-a", lease=timedelta(seconds=30))
    assert [e.id for e in leased] == ids[:3] and all(e.attempts == 1 for e in leased)
    other = store.pending_events(limit=10, owner="drainer-b")
    assert [e.id for e in other] == ids[3:]

    assert store.delete_events([ids[0], ids[1], 10**9]) == 2
    assert store.delete_events([]) == 0
    assert store.outbox_size() == 3
    assert store.pending_events(limit=10, owner="drainer-b") == []
    clock.offset_seconds = 120  # every lease ran out: pending again, attempts counted
    again = store.pending_events(limit=10, owner="drainer-c")
    assert [(e.id, e.attempts) for e in again] == [(ids[2], 2), (ids[3], 2), (ids[4], 2)]


def test_outbox_event_that_cannot_be_opened_does_not_block_the_rest(store: Store) -> None:
    ids = [store.append_event(NewEvent(f"subject.{i}", b"payload")) for i in range(3)]
    with store.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == ids[0])
                     .values(payload_enc=b"\x01" + bytes(40)))
    assert [e.id for e in store.pending_events(limit=10)] == ids[1:]
    assert store.outbox_size() == 3  # nothing is dropped; the bad row stays for an operator
    store.delete_events(ids[1:])
    with pytest.raises(SEAL_ERRORS):
        store.pending_events(limit=10)


# ------------------------------------------------------------------- threads


def test_one_store_from_many_threads(store: Store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    made = [make_cert(f"thing-{i % 4}") for i in range(64)]

    def work(new: object) -> str:
        store.save(new)  # type: ignore[arg-type]
        return store.get(new.serial).serial  # type: ignore[attr-defined]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, made)) == sorted(c.serial for c in made)
    assert sum(store.list_by_thing(f"thing-{i}").total for i in range(4)) == 64

    target = store.save(make_cert("thing-race"))

    def download(_: int) -> str:
        try:
            store.mark_downloaded(target.serial, "thing-race")
        except AlreadyDownloaded:
            return "lost"
        return "won"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(download, range(16)))
    assert outcomes.count("won") == 1 and outcomes.count("lost") == 15


def test_legacy_plaintext_keys_are_sealed_and_still_open(store: Store) -> None:
    legacy = make_cert("thing-go")
    store.save(legacy)
    with store.engine.begin() as conn:  # as a row imported from the Go service looks
        conn.execute(update(certs).where(certs.c.serial == legacy.serial)
                     .values(client_key=legacy.private_key_pem, private_key_enc=None))
    assert store.get(legacy.serial, with_key=True).private_key_pem == legacy.private_key_pem

    assert store.seal_legacy_keys() == 1
    raw = _raw_cert(store, legacy.serial)
    assert raw["client_key"] is None and raw["private_key_enc"] is not None
    assert legacy.private_key_pem is not None
    sealed = raw["private_key_enc"]
    assert isinstance(sealed, bytes) and legacy.private_key_pem.encode() not in sealed
    assert store.get(legacy.serial, with_key=True).private_key_pem == legacy.private_key_pem
    assert store.seal_legacy_keys() == 0


def test_in_memory_sqlite_store() -> None:
    engine = create_engine_for("sqlite://")
    migrate(engine)
    store = Store(engine, SoftwareSealer())
    saved = store.save(make_cert("thing-m"))
    assert store.mark_downloaded(saved.serial, "thing-m").private_key_pem == saved.private_key_pem
    assert store.revoke(saved.serial).seq == 1
    engine.dispose()
