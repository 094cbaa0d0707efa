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


def _entry(function: Callable[..., Any], args: tuple[Any, ...], start: Barrier,
           results: "multiprocessing.Queue[tuple[int, bool, Any]]", index: int) -> None:
    try:
        results.put((index, True, function(*args, start)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        start.abort()
        results.put((index, False, traceback.format_exc()))


def run_in_processes(function: Callable[..., Any], arg_lists: list[tuple[Any, ...]],
                     timeout: float = 120) -> list[Any]:
    """Run ``function(*args, start_barrier)`` once per args in its own spawned process.

    The processes wait on a barrier after connecting, so they start their work together.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(arg_lists), timeout=timeout)
    results: multiprocessing.Queue[tuple[int, bool, Any]] = context.Queue()
    processes = [
        context.Process(target=_entry, args=(function, args, start, results, index))
        for index, args in enumerate(arg_lists)
    ]
    for process in processes:
        process.start()
    collected: dict[int, Any] = {}
    failures: list[str] = []
    try:
        for _ in processes:
            index, ok, value = results.get(timeout=timeout)
            if ok:
                collected[index] = value
            else:
                failures.append(value)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    if failures:
        raise AssertionError("a worker process failed:\n" + "\n".join(failures))
    return [collected[i] for i in range(len(arg_lists))]
