"""The rotation run in-process, on SQLite and PostgreSQL, with the real token."""

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from sqlalchemy import func, select

import repository
from authority.identity import ThingsClient
from hsm.authority import CertificateAuthority
from hsm.certificate import CLOCK_SKEW
from repository import Store
from repository.schema import certs, outbox, revoked_certs
from scheduler.rotation import Rotator
from tests.scheduler.helpers import (
    check_certificate,
    crl_serials,
    decode_event,
    due_certificate,
    issue_due,
)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def leased(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(certs.c.serial).where(certs.c.lease_owner.is_not(None)))
                    .scalars())


def active_of(store: Store, thing_id: str) -> list[repository.Certificate]:
    return list(store.list_by_thing(thing_id, limit=200).items)


async def test_rotates_due_certificates(
    store: Store, authority: CertificateAuthority, make_rotator, crl_path: Path,
    ca_pem_path: Path, tmp_path: Path,
) -> None:
    due = {
        "thing-ec256": issue_due(store, authority, "thing-ec256"),
        "thing-ec384": issue_due(store, authority, "thing-ec384", bits=384,
                                 lifetime=timedelta(days=20), expires_in=timedelta(hours=3)),
        "thing-rsa": issue_due(store, authority, "thing-rsa", key_type="rsa", bits=2048),
    }
    later = issue_due(store, authority, "thing-later", expires_in=timedelta(days=5))
    expired = issue_due(store, authority, "thing-expired", expires_in=timedelta(hours=-2))
    rotated_before = sample("certs_rotations_total")

    report = await make_rotator(store).run_once()

    assert report.failed == [] and report.skipped == []
    assert {r.old_serial for r in report.rotated} == {c.serial for c in due.values()}
    assert sample("certs_rotations_total") == rotated_before + 3
    events = {e.subject: e for e in store.pending_events(limit=100)}
    assert len(events) == 3
    for thing_id, old in due.items():
        with pytest.raises(repository.NotFound):
            store.get(old.serial)
        [new] = active_of(store, thing_id)
        assert new.serial != old.serial
        assert (new.private_key_type, new.key_bits) == (old.private_key_type, old.key_bits)
        assert new.owner_id == old.owner_id
        assert old.not_before is not None and new.not_before is not None
        assert new.expires_at - new.not_before == old.expires_at - old.not_before  # same lifetime
        assert abs(new.not_before + CLOCK_SKEW - datetime.now(UTC)) < timedelta(minutes=1)
        assert store.get(new.serial, with_key=True).private_key_pem  # downloadable once
        message, body = decode_event(events[f"things.{thing_id}.commands.cert-rotation"].payload)
        assert message.publisher == thing_id and message.subtopic == "cert-rotation"
        assert body["serial"] == new.serial and body["thing_id"] == thing_id
        assert body["expires_at"] == new.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert body["client_cert"] == new.certificate_pem
        cert = check_certificate(body, ca_pem_path, tmp_path)
        assert cert.not_valid_after_utc == new.expires_at
    assert active_of(store, "thing-later") == [store.get(later.serial)]
    assert active_of(store, "thing-expired") == [store.get(expired.serial)]  # SPEC 9: not rotated
    listed = crl_serials(crl_path)
    assert {int(due[t].serial, 16) for t in due} <= listed
    assert report.crl_number is not None
    assert leased(store) == []

    again = await make_rotator(store).run_once()
    assert again.rotated == [] and again.failed == []
    assert store.outbox_size() == 3


async def test_failures_are_counted_released_and_retried(
    store: Store, authority: CertificateAuthority, make_rotator,
) -> None:
    good = issue_due(store, authority, "thing-good")
    odd_size = store.save(dataclasses.replace(
        due_certificate(authority, "thing-odd"), private_key_type="rsa", key_bits=1024))
    bad_subject = issue_due(store, authority, "bad.thing")
    failures_before = sample("certs_rotation_failures_total")

    report = await make_rotator(store, batch=2).run_once()

    assert [r.old_serial for r in report.rotated] == [good.serial]
    assert sorted(report.failed) == sorted([odd_size.serial, bad_subject.serial])
    assert sample("certs_rotation_failures_total") == failures_before + 2
    assert store.get(odd_size.serial) and store.get(bad_subject.serial)  # still active
    assert leased(store) == []  # claims given back
    assert store.outbox_size() == 1

    retry = await make_rotator(store).run_once()
    assert sorted(retry.failed) == sorted([odd_size.serial, bad_subject.serial])
    assert retry.rotated == []


async def test_a_renewal_shorter_than_the_window_is_not_renewed_again(
    store: Store, authority: CertificateAuthority, make_rotator,
) -> None:
    # A lifetime shorter than the renew window: the renewal is inside the window at once, but
    # it has its whole lifetime left (SPEC 9), so neither this run nor the next renews it.
    old = issue_due(store, authority, "thing-short", lifetime=timedelta(days=1),
                    expires_in=timedelta(hours=6))
    rotator: Rotator = make_rotator(store, batch=1)
    first = await rotator.run_once()
    assert [r.old_serial for r in first.rotated] == [old.serial]
    assert leased(store) == []
    second = await rotator.run_once()
    assert second.rotated == [] and second.failed == []
    assert [c.serial for c in active_of(store, "thing-short")] == [first.rotated[0].new_serial]
    assert store.outbox_size() == 1


async def test_renewal_is_capped_at_the_ca_and_not_repeated(
    store: Store, authority: CertificateAuthority, make_rotator,
) -> None:
    record = due_certificate(authority, "thing-long")
    # Recorded as issued a century ago: the same lifetime would outlive the CA.
    old = store.save(dataclasses.replace(
        record, not_before=record.not_before - timedelta(days=36500)))
    report = await make_rotator(store).run_once()
    [rotated] = report.rotated
    new = store.get(rotated.new_serial)
    assert authority.not_after - timedelta(seconds=5) <= new.expires_at <= authority.not_after
    assert old.serial not in {c.serial for c in active_of(store, "thing-long")}

    # A certificate due (a century-long lifetime, a third of it left) whose renewal could not
    # expire later than itself, the CA expiring first: left alone instead of being renewed at
    # every run. The capped renewal above has its whole lifetime left: not due.
    ends_with_ca = due_certificate(
        authority, "thing-ends-with-ca",
        expires_in=authority.not_after - datetime.now(UTC) - timedelta(hours=1))
    late = store.save(dataclasses.replace(
        ends_with_ca, not_before=ends_with_ca.not_before - timedelta(days=36500)))
    wide = make_rotator(store, renew_window=authority.not_after - datetime.now(UTC)
                        + timedelta(days=1))
    again = await wide.run_once()
    assert again.rotated == [] and again.skipped == [late.serial]
    assert store.get(new.serial) and store.get(late.serial) and leased(store) == []


async def test_replace_of_a_revoked_certificate_changes_nothing(
    store: Store, authority: CertificateAuthority, make_rotator,
) -> None:
    cert = issue_due(store, authority, "thing-gone")
    store.revoke(cert.serial)
    with pytest.raises(repository.NotFound):
        make_rotator(store).rotate(cert, cert.thing_id)
    assert active_of(store, "thing-gone") == []
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(revoked_certs)).scalar_one() == 1


async def test_subject_is_the_thing_key_when_configured(
    sqlite_url: str, make_store, authority: CertificateAuthority, make_rotator, identity,
    ca_pem_path: Path, tmp_path: Path,
) -> None:
    """MF_CERTS_SUBJECT_CN=thing_key: the renewal names the thing key, as the issue did."""
    store = make_store(sqlite_url)
    thing = identity.thing_a2
    known = issue_due(store, authority, thing.id)
    unknown = issue_due(store, authority, identity.unknown_thing_id)
    async with ThingsClient(identity.things_url, timeout=2.0) as things:
        report = await make_rotator(store, subject_for=things.thing_key).run_once()
    assert [r.old_serial for r in report.rotated] == [known.serial]
    assert report.failed == [unknown.serial]  # the things service does not know it
    [event] = store.pending_events()
    _, body = decode_event(event.payload)
    cert = check_certificate(body, ca_pem_path, tmp_path)
    [cn] = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cn.value == thing.key and body["thing_id"] == thing.id


async def test_only_certificates_with_a_third_of_their_lifetime_left_are_rotated(
    store: Store, authority: CertificateAuthority, make_rotator,
) -> None:
    """SPEC 9: due when the remaining lifetime is at most the window and a third of the whole
    lifetime. Fresh 100h and 2048h certificates survive any number of runs (restarts)."""
    fresh_short = issue_due(store, authority, "thing-100h", lifetime=timedelta(hours=100),
                            expires_in=timedelta(hours=99))
    fresh_long = issue_due(store, authority, "thing-2048h", lifetime=timedelta(hours=2048),
                           expires_in=timedelta(hours=2000))
    short_not_yet = issue_due(store, authority, "thing-100h-early",
                              lifetime=timedelta(hours=100), expires_in=timedelta(hours=40))
    short_due = issue_due(store, authority, "thing-100h-due", lifetime=timedelta(hours=100),
                          expires_in=timedelta(hours=33))
    long_due = issue_due(store, authority, "thing-2048h-due", lifetime=timedelta(hours=2048),
                         expires_in=timedelta(days=27))

    for _ in range(2):  # a second run stands for a restart
        report = await make_rotator(store, renew_window=timedelta(hours=720)).run_once()
        assert report.failed == []
        assert {r.old_serial for r in report.rotated} <= {short_due.serial, long_due.serial}
    for kept in (fresh_short, fresh_long, short_not_yet):
        assert active_of(store, kept.thing_id) == [store.get(kept.serial)]
    for rotated in (short_due, long_due):
        [new] = active_of(store, rotated.thing_id)
        assert new.serial != rotated.serial
