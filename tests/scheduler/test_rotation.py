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
        "thing-rsa": issue_due(store, authority, "thing-rsa", key_type="rsa", bits=2048,
                               expires_in=timedelta(hours=-2)),  # already expired: renewed too
    }
    later = issue_due(store, authority, "thing-later", expires_in=timedelta(days=5))
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
    listed = crl_serials(crl_path)
    assert {int(due[t].serial, 16) for t in ("thing-ec256", "thing-ec384")} <= listed
    assert int(due["thing-rsa"].serial, 16) not in listed  # expired: no longer in a CRL
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


async def test_certificate_issued_during_a_run_waits_for_the_next_run(
    store: Store, authority: CertificateAuthority, make_rotator,
) -> None:
    # A lifetime shorter than the renew window: the renewal is due at once, but not renewed
    # again by the same run (the run would never end).
    old = issue_due(store, authority, "thing-short", lifetime=timedelta(days=1),
                    expires_in=timedelta(hours=12))
    rotator: Rotator = make_rotator(store, batch=1)
    first = await rotator.run_once()
    assert [r.old_serial for r in first.rotated] == [old.serial]
    assert leased(store) == []
    second = await rotator.run_once()
    assert [r.old_serial for r in second.rotated] == [first.rotated[0].new_serial]
    assert store.outbox_size() == 2


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

    # With a window reaching past the CA, the renewal is due again; renewing could not give a
    # later expiry, so it is left alone instead of being renewed at every run.
    wide = make_rotator(store, renew_window=authority.not_after - datetime.now(UTC)
                        + timedelta(days=1))
    again = await wide.run_once()
    assert again.rotated == [] and again.skipped == [new.serial]
    assert store.get(new.serial) and leased(store) == []


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
