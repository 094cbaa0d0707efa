"""Several processes on one PostgreSQL database, as several replicas of the service would be."""

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from repository import Store, create_engine_for, migrate
from tests.repository import workers
from tests.repository.helpers import SoftwareSealer, make_cert

PROCESSES = 4
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def team() -> Iterator[workers.ProcessTeam]:
    """Four spawned processes, like four replicas of the service (started once)."""
    processes = workers.ProcessTeam(PROCESSES)
    yield processes
    processes.close()


@pytest.fixture
def shared(postgres_url: str) -> Iterator[tuple[str, bytes, Store]]:
    migrate(postgres_url)
    sealer = SoftwareSealer()
    store = Store(create_engine_for(postgres_url), sealer)
    yield postgres_url, sealer.key, store
    store.engine.dispose()


def test_processes_never_claim_the_same_certificate(
    shared: tuple[str, bytes, Store], team: workers.ProcessTeam
) -> None:
    url, key, store = shared
    due = {store.save(make_cert(f"thing-{i % 13}", expires_at=NOW + timedelta(hours=i + 1))).serial
           for i in range(240)}
    for i in range(40):
        store.save(make_cert("thing-late", expires_at=NOW + timedelta(days=200 + i)))
    horizon = (NOW + timedelta(days=30)).isoformat()

    claims = team.run(
        workers.claim_all, [(url, key, f"worker-{n}", horizon, 7) for n in range(PROCESSES)])

    everything = [serial for claimed in claims for serial in claimed]
    duplicates = [s for s, n in Counter(everything).items() if n > 1]
    assert duplicates == []
    assert set(everything) == due
    assert sum(1 for claimed in claims if claimed) >= 2  # the work was really shared


def test_concurrent_downloads_have_exactly_one_winner(
    shared: tuple[str, bytes, Store], team: workers.ProcessTeam
) -> None:
    url, key, store = shared
    targets = []
    for i in range(40):
        cert = store.save(make_cert(f"thing-{i}"))
        targets.append((cert.serial, cert.thing_id))

    outcomes = team.run(workers.download_all, [(url, key, targets)] * PROCESSES)

    for serial, _ in targets:
        results = [outcome[serial] for outcome in outcomes]
        assert results.count("won") == 1, (serial, results)
        assert results.count("lost") == PROCESSES - 1
        assert store.get(serial).downloaded is True


def test_concurrent_revocations_keep_crl_numbers_and_seqs_strictly_increasing(
    shared: tuple[str, bytes, Store], team: workers.ProcessTeam
) -> None:
    url, key, store = shared
    revokers, per_process = PROCESSES - 1, 34
    serials = [store.save(make_cert(f"thing-{i}")).serial for i in range(revokers * per_process)]
    total = len(serials)
    jobs: list[tuple[object, ...]] = [
        (url, key, serials[n * per_process:(n + 1) * per_process], "revoke")
        for n in range(revokers)
    ]

    # Three processes revoke (taking a CRL number after each) while a fourth reads the CRL
    # increments as they commit.
    results = team.run(workers.revoke_or_follow, [*jobs, (url, key, total, "follow")])
    revoked, follower = results[:-1], results[-1]

    seqs = [seq for pairs in revoked for seq, _ in pairs]
    numbers = [number for pairs in revoked for _, number in pairs]
    assert sorted(numbers) == list(range(1, total + 1))  # no duplicate, no gap
    assert sorted(seqs) == list(range(1, total + 1))
    for pairs in revoked:  # each process saw its numbers strictly increase
        assert [n for _, n in pairs] == sorted({n for _, n in pairs})
        assert [s for s, _ in pairs] == sorted({s for s, _ in pairs})
    # The reader that fetched only "after the last seq seen" missed no revocation.
    assert follower == list(range(1, total + 1))
    assert [e.seq for e in store.crl_entries()] == list(range(1, total + 1))
    assert store.crl_state().crl_number == total


def test_a_certificate_is_replaced_exactly_once(
    shared: tuple[str, bytes, Store], team: workers.ProcessTeam
) -> None:
    url, key, store = shared
    olds = [(c.serial, c.thing_id) for c in (store.save(make_cert(f"t-{i}")) for i in range(30))]

    outcomes = team.run(workers.replace_all, [(url, key, olds)] * PROCESSES)

    for serial, thing in olds:
        results = [outcome[serial] for outcome in outcomes]
        winners = [r for r in results if r != "not found"]
        assert len(winners) == 1, (serial, results)
        page = store.list_by_thing(thing)
        assert [c.serial for c in page.items] == winners
    assert len(store.crl_entries()) == len(olds)
