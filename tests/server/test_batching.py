"""The batcher behind EC issuance: grouping, per-job outcomes, failures and cancellation, on a
real thread pool."""

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from authority.batching import Batcher


class Recorder:
    """Work that records each batch it gets and may be held until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Semaphore(0)

    def __call__(self, jobs: list[int]) -> list[int | Exception]:
        self.batches.append(list(jobs))
        self.entered.release()
        assert self.release.wait(10)
        return [ValueError(f"odd {job}") if job % 2 else job * 10 for job in jobs]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


async def _entered(recorder: Recorder, count: int = 1) -> None:
    for _ in range(count):
        assert await asyncio.to_thread(recorder.entered.acquire, True, 10)


async def _first_batch_held(executor: ThreadPoolExecutor, max_batch: int = 32
                            ) -> tuple[Recorder, Batcher[int, int], asyncio.Task[int]]:
    """A batcher running one batch at a time, its first batch (job 0) held inside the work."""
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, executor, max_batch=max_batch, max_running=1)
    first = asyncio.create_task(batcher.submit(0))
    await _entered(recorder)
    return recorder, batcher, first


async def test_a_lone_job_runs_at_once(executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, executor)
    assert await asyncio.wait_for(batcher.submit(4), 10) == 40
    assert recorder.batches == [[4]]


async def test_jobs_arriving_during_a_batch_form_the_next_one(
        executor: ThreadPoolExecutor) -> None:
    recorder, batcher, first = await _first_batch_held(executor)
    later = [asyncio.create_task(batcher.submit(job)) for job in range(2, 22, 2)]
    await asyncio.sleep(0.05)
    recorder.release.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [job * 10 for job in range(2, 22, 2)]
    assert recorder.batches == [[0], list(range(2, 22, 2))]


async def test_batches_are_capped_in_size(executor: ThreadPoolExecutor) -> None:
    recorder, batcher, first = await _first_batch_held(executor, max_batch=4)
    later = [asyncio.create_task(batcher.submit(job)) for job in range(2, 20, 2)]
    await asyncio.sleep(0.05)
    recorder.release.set()
    await asyncio.gather(first, *later)
    assert [len(batch) for batch in recorder.batches] == [1, 4, 4, 1]


async def test_up_to_max_running_batches_run_at_the_same_time(
        executor: ThreadPoolExecutor) -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = Batcher(recorder, executor, max_running=2)
    jobs = []
    for job in (0, 2):
        jobs.append(asyncio.create_task(batcher.submit(job)))
        await _entered(recorder)  # both batches end up inside the work at once
    third = asyncio.create_task(batcher.submit(4))
    await asyncio.sleep(0.05)
    assert len(recorder.batches) == 2  # the third waits for a free slot
    recorder.release.set()
    assert await asyncio.gather(*jobs, third) == [0, 20, 40]
    assert len(recorder.batches) == 3


async def test_each_job_gets_its_own_outcome(executor: ThreadPoolExecutor) -> None:
    recorder, batcher, first = await _first_batch_held(executor)
    later = [asyncio.create_task(batcher.submit(job)) for job in (1, 2, 3)]
    await asyncio.sleep(0.05)
    recorder.release.set()
    results = await asyncio.gather(first, *later, return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert [str(results[i]) for i in (1, 3)] == ["odd 1", "odd 3"]
    assert all(isinstance(results[i], ValueError) for i in (1, 3))
    assert recorder.batches == [[0], [1, 2, 3]]


async def test_work_that_raises_fails_its_batch_only(executor: ThreadPoolExecutor) -> None:
    calls = 0

    def flaky(jobs: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database gone")
        return [job for job in jobs]

    batcher = Batcher(flaky, executor)
    with pytest.raises(ConnectionError, match="database gone"):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2


async def test_work_returning_the_wrong_number_of_outcomes_fails_the_batch(
        executor: ThreadPoolExecutor) -> None:
    batcher = Batcher(lambda jobs: [], executor)
    with pytest.raises(RuntimeError, match="0 outcomes for 1 jobs"):
        await batcher.submit(1)


async def test_a_job_cancelled_before_its_batch_starts_is_dropped(
        executor: ThreadPoolExecutor) -> None:
    recorder, batcher, first = await _first_batch_held(executor)
    given_up = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(4))
    await asyncio.sleep(0.05)
    given_up.cancel()
    recorder.release.set()
    assert (await first, await kept) == (0, 40)
    assert given_up.cancelled()
    assert recorder.batches == [[0], [4]]
