"""The audit trail at the use-case and store level: the actor when AuthService.Identify fails,
and one intact chain under concurrent writers on both backends."""

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from authority import audit as trail
from authority.identity import AuthClient
from authority.records import new_record
from authority.requests import IssueRequest
from hsm.client_keys import ClientKey, generate_client_key
from repository import Store, create_engine_for, migrate
from repository.audit import Audit
from server.http.app import create_app
from tests.fixtures.ports import free_port
from tests.http.conftest import _build_components, serving


async def test_an_unidentified_user_still_gets_the_certificate(
        authority, identity, sqlite_url: str, tmp_path: Path, caplog) -> None:
    components = _build_components(sqlite_url, authority, identity, tmp_path)
    components.service.auth = AuthClient(f"127.0.0.1:{free_port()}", timeout=1)  # nobody there
    caplog.set_level(logging.WARNING, logger="certs.audit")
    try:
        async with serving(create_app(components=components)) as client:
            response = await client.post(
                "/certs", headers={"Authorization": f"Bearer {identity.alice.token}"},
                json={"thing_id": identity.thing_a1.id, "key_type": "ec", "ttl": "1h"})
            assert response.status_code == 201, response.text
    finally:
        await components.things.close()
        components.service.close()
    records = list(trail.records(components.store))
    assert [(r.actor, r.action, r.issued) for r in records] == [
        ("user:unidentified", "issue", (response.json()["serial"],))]
    warnings = [r for r in caplog.records if r.name == "certs.audit"]
    assert len(warnings) == 1 and "user:unidentified" in warnings[0].getMessage()
    assert identity.alice.token not in caplog.text


def test_concurrent_writers_extend_one_chain(authority, db_url: str) -> None:
    migrate(db_url)
    store = Store(create_engine_for(db_url), authority.sealer)
    request = IssueRequest("thing-x", "ec", 256, timedelta(hours=1))
    issued = [authority.issue("thing-x", _key(), request.ttl) for _ in range(24)]

    def change(index: int) -> None:
        who = Audit(actor=f"user:{index % 3}", action="issue", request_id=f"r{index}")
        saved = store.save(new_record("thing-x", issued[index]), audit=who)
        if index % 2:
            store.revoke(saved.serial, audit=Audit(actor="operator", action="revoke"))

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(change, range(len(issued))))
    verdict = trail.verify(store)
    assert verdict.ok and verdict.records == 24 + 12, verdict
    records = list(trail.records(store))
    assert [r.seq for r in records] == list(range(1, 37))
    assert {r.request_id for r in records if r.action == "issue"} == {
        f"r{i}" for i in range(24)}
    since = datetime.fromisoformat(records[10].at)
    later = list(trail.records(store, since=since))
    assert 11 in {r.seq for r in later} and all(r.at >= records[10].at for r in later)
    assert len(later) < len(records)
    assert trail.parse_since("1h") < datetime.now(UTC)
    store.engine.dispose()


def _key() -> ClientKey:
    return generate_client_key("ec", 256)


def test_a_batch_is_chained_as_this_process_hashes_it(authority, db_url: str) -> None:
    """save_many's records (hashed by the database on PostgreSQL) are the ones this process
    computes, also with text that looks like the canonical form's own seq key."""
    migrate(db_url)
    store = Store(create_engine_for(db_url), authority.sealer)
    ttl = timedelta(hours=1)
    tricky = 'user:"seq":0,"thing_id":"x"'
    whos = [Audit(actor=tricky, action="issue", email="zoë@example.com", client="10.0.0.1"),
            Audit(actor="user:2", action="issue", request_id="r-2"),
            None]
    first = store.save(new_record("thing-b", authority.issue("thing-b", _key(), ttl)))
    batch = store.save_many([new_record("thing-b", authority.issue("thing-b", _key(), ttl))
                             for _ in whos], whos)
    records = list(trail.records(store))
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert [r.issued for r in records] == [(c.serial,) for c in (first, *batch)]
    assert [(r.actor, r.email) for r in records[1:]] == [
        (tricky, "zoë@example.com"), ("user:2", None), ("operator", None)]
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.hash
        assert record.hash == record.computed_hash()
    before, after = records[1].canonical_around_seq()
    assert before + b"2" + after == records[1].canonical()
    assert store.audit_head() == (4, records[-1].hash)
    assert trail.verify(store).ok
    store.engine.dispose()
