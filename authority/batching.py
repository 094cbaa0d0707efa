"""Group work: jobs submitted while a batch is running are run together as the next batch.

A lone job starts at once (there is no timer), so an idle service answers as fast as before;
under load, many requests share one thread hop and one database transaction, and the code they
run stays hot in the CPU cache.
"""

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


class Batcher(Generic[Job, Result]):
    """Runs ``work`` on the executor over lists of jobs, at most ``max_running`` lists at a time.

    ``work`` returns one outcome per job, in order; if it raises, every job of that batch fails
    with that error. A job whose caller gave up (cancelled) before its batch started is dropped.
    """

    def __init__(self, work: Callable[[list[Job]], Sequence[Result | Exception]],
                 executor: Executor,
                 *, max_batch: int = 32, max_running: int = 2) -> None:
        self._work = work
        self._executor = executor
        self._max_batch = max_batch
        self._max_running = max_running
        self._pending: list[tuple[Job, asyncio.Future[Result]]] = []
        self._running = 0
        self._drains: set[asyncio.Task[None]] = set()

    async def submit(self, job: Job) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((job, future))
        if self._running < self._max_running:
            self._running += 1
            drain = loop.create_task(self._drain(loop))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self._pending:
                batch = self._next_batch()
                if batch:
                    await self._run(loop, batch)
        finally:
            self._running -= 1
            if self._running == 0 and self._pending:  # left behind by a cancelled drain
                for _, future in self._pending:
                    future.cancel()
                self._pending = []

    def _next_batch(self) -> list[tuple[Job, asyncio.Future[Result]]]:
        taken, self._pending = self._pending[:self._max_batch], self._pending[self._max_batch:]
        return [(job, future) for job, future in taken if not future.done()]

    async def _run(self, loop: asyncio.AbstractEventLoop,
                   batch: list[tuple[Job, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await loop.run_in_executor(self._executor, self._work,
                                                  [job for job, _ in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"batch work returned {len(outcomes)} outcomes for "
                                   f"{len(batch)} jobs")
        except Exception as exc:  # noqa: BLE001 - the whole batch failed with this error
            outcomes = [exc] * len(batch)
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
