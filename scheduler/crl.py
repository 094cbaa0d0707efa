"""The CRL publisher behind a lock shared by every process writing the same CRL file.

Each process has its own ``CrlPublisher``; two of them publishing at once could otherwise
finish in the wrong order and leave on disk a CRL signed earlier, without the revocations the
other one just covered. With the publish (read, sign, write) under an exclusive ``flock`` on
``<crl_path>.lock``, the last file written was built after every earlier write, so it covers
every revocation that was committed before any process asked for it to be covered.
"""

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from server.crl_publisher import CrlPublisher, PublishedCrl

T = TypeVar("T")


class LockedCrl:
    """``CrlPublisher``'s operations, each under the cross-process file lock."""

    def __init__(self, publisher: CrlPublisher, crl_path: str) -> None:
        self.publisher = publisher
        self.lock_path = Path(f"{crl_path}.lock")

    @property
    def current(self) -> PublishedCrl | None:
        return self.publisher.current

    def publish(self) -> PublishedCrl:
        return self._locked(self.publisher.publish)

    def ensure_covers(self, revocation_seq: int) -> PublishedCrl:
        return self._locked(lambda: self.publisher.ensure_covers(revocation_seq))

    def ensure_current(self) -> PublishedCrl:
        return self._locked(self.publisher.ensure_current)

    def _locked(self, work: Callable[[], T]) -> T:
        with self._flock():
            return work()

    @contextmanager
    def _flock(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
