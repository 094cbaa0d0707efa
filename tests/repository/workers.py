"""Code the concurrency tests run in separate processes (spawned, so importable by name)."""

import multiprocessing
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from multiprocessing.synchronize import Barrier
from typing import Any

from repository import AlreadyDownloaded, NotFound, Store, create_engine_for
from tests.repository.helpers import SoftwareSealer, make_cert


def _store(url: str, key: bytes) -> Store:
    store = Store(create_engine_for(url, pool_size=2), SoftwareSealer(key))
    store.ping()  # connect before the start line
    return store


def claim_all(url: str, key: bytes, owner: str, horizon: str, limit: int,
              start: Barrier) -> list[str]:
    store = _store(url, key)
    start.wait()
    claimed: list[str] = []
    while batch := store.claim_expiring(datetime.fromisoformat(horizon), owner, limit=limit):
        claimed += [c.serial for c in batch]
    return claimed


def download_all(url: str, key: bytes, targets: list[tuple[str, str]],
                 start: Barrier) -> dict[str, str]:
    store = _store(url, key)
    start.wait()
    outcome: dict[str, str] = {}
    for serial, thing in targets:
        try:
            store.mark_downloaded(serial, thing)
            outcome[serial] = "won"
        except AlreadyDownloaded:
            outcome[serial] = "lost"
    return outcome


def revoke_and_number(url: str, key: bytes, serials: list[str],
                      start: Barrier) -> list[tuple[int, int]]:
    """Revoke each serial and take a CRL number after each: (revocation seq, CRL number)."""
    store = _store(url, key)
    start.wait()
    return [(store.revoke(serial).seq, store.next_crl_number()) for serial in serials]


def follow_crl(url: str, key: bytes, expected: int, start: Barrier) -> list[int]:
    """Read the CRL incrementally (after the last seq seen) while others revoke."""
    store = _store(url, key)
    start.wait()
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < expected and time.monotonic() < deadline:
        after = seen[-1] if seen else 0
        seen += [entry.seq for entry in store.crl_entries(after_seq=after, limit=7)]
    return seen


def revoke_or_follow(url: str, key: bytes, work: Any, role: str, start: Barrier) -> Any:
    """One of the revokers (``work``: serials) or the CRL follower (``work``: how many)."""
    if role == "follow":
        return follow_crl(url, key, int(work), start)
    return revoke_and_number(url, key, list(work), start)


def replace_all(url: str, key: bytes, olds: list[tuple[str, str]],
                start: Barrier) -> dict[str, str]:
    store = _store(url, key)
    news = [make_cert(thing) for _, thing in olds]
    start.wait()
    outcome: dict[str, str] = {}
    for (serial, _), new in zip(olds, news, strict=True):
        try:
            store.replace(serial, new)
            outcome[serial] = new.serial
        except NotFound:
            outcome[serial] = "not found"
    return outcome


def _serve(index: int, tasks: "multiprocessing.Queue[Any]",
           results: "multiprocessing.Queue[Any]", start: Barrier) -> None:
    """A worker process's loop: run ``function(*args, start)`` per task until told to stop."""
    while (task := tasks.get()) is not None:
        function, args = task
        try:
            results.put((index, True, function(*args, start)))
        except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
            start.abort()
            results.put((index, False, traceback.format_exc()))


class ProcessTeam:
    """A fixed number of spawned processes that start each task together (reused by tests).

    Spawning is the slow part (each process imports SQLAlchemy, psycopg and cryptography), so
    the team is made once and every task runs in all of its processes at the same moment:
    each connects first, then waits on a shared barrier.
    """

    def __init__(self, size: int, timeout: float = 120) -> None:
        context = multiprocessing.get_context("spawn")
        self.size = size
        self.timeout = timeout
        self._start = context.Barrier(size, timeout=timeout)
        self._results: multiprocessing.Queue[Any] = context.Queue()
        self._tasks: list[multiprocessing.Queue[Any]] = [context.Queue() for _ in range(size)]
        self._processes = [
            context.Process(target=_serve, args=(i, queue, self._results, self._start),
                            daemon=True)
            for i, queue in enumerate(self._tasks)
        ]
        for process in self._processes:
            process.start()

    def run(self, function: Callable[..., Any], arg_lists: list[tuple[Any, ...]]) -> list[Any]:
        """``function(*args, barrier)`` in each process (one args tuple each); results in order."""
        if len(arg_lists) != self.size:
            raise ValueError(f"need exactly {self.size} argument tuples")
        self._start.reset()
        for queue, args in zip(self._tasks, arg_lists, strict=True):
            queue.put((function, args))
        outcomes = sorted((self._results.get(timeout=self.timeout) for _ in arg_lists),
                          key=lambda outcome: outcome[0])
        failures = [value for _, ok, value in outcomes if not ok]
        if failures:
            raise AssertionError("a worker process failed:\n" + "\n".join(failures))
        return [value for _, _, value in outcomes]

    def close(self) -> None:
        for queue in self._tasks:
            queue.put(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
