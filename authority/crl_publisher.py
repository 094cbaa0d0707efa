"""The current CRL: rebuilt from the store after revocations and before it goes stale.

Each revoked entry is encoded once and cached by serial; the store's revocation sequence says
which revocations a published CRL already covers, so a rebuild reads only newer ones.
"""

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from authority import metrics
from authority.files import write_atomically
from hsm.authority import CertificateAuthority
from hsm.crl import revoked_entry
from hsm.der import pem
from repository import Store

log = logging.getLogger(__name__)
READ_BATCH = 50_000


@dataclass(frozen=True)
class PublishedCrl:
    der: bytes
    pem: str
    number: int
    this_update: datetime
    next_update: datetime
    revocation_seq: int
    entries: int


@dataclass
class _Cached:
    entry: bytes
    expires_at: datetime | None


class CrlPublisher:
    """Builds, signs and writes the CRL; thread-safe, one rebuild at a time."""

    def __init__(
        self, authority: CertificateAuthority, store: Store, path: str, validity: timedelta
    ) -> None:
        self._authority = authority
        self._store = store
        self._path = Path(path)
        self._validity = validity
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._seq = 0
        self.current: PublishedCrl | None = None

    def publish(self) -> PublishedCrl:
        """Sign a new CRL now with every revoked, unexpired certificate and write it."""
        with self._lock:
            return self._publish_locked()

    def ensure_covers(self, revocation_seq: int) -> PublishedCrl:
        """The current CRL if it lists revocation ``revocation_seq``, else a new one."""
        with self._lock:
            if self.current is not None and self.current.revocation_seq >= revocation_seq:
                return self.current
            return self._publish_locked()

    def ensure_current(self) -> PublishedCrl:
        """Rebuild when another process revoked something or half the validity has passed."""
        latest = self._store.crl_state().revocation_seq
        with self._lock:
            current = self.current
            if (current is None or current.revocation_seq < latest
                    or datetime.now(UTC) >= current.this_update + self._validity / 2):
                return self._publish_locked()
            return current

    def _publish_locked(self) -> PublishedCrl:
        # The bulk of the new revocations is read and encoded first, so that processes building
        # their first CRL do not queue behind each other on the file lock.
        self._read_new_revocations(datetime.now(UTC))
        # Processes sharing the file publish one at a time, so the file written last was built
        # last and covers every revocation any of them was asked to cover.
        with _file_lock(Path(f"{self._path}.lock")):
            return self._publish_exclusively()

    def _publish_exclusively(self) -> PublishedCrl:
        self._read_new_revocations(datetime.now(UTC))
        now = datetime.now(UTC).replace(microsecond=0)
        expired = [serial for serial, cached in self._cache.items()
                   if cached.expires_at is not None and cached.expires_at <= now]
        for serial in expired:
            del self._cache[serial]
        number = self._store.next_crl_number()
        next_update = now + self._validity
        der = self._authority.crls.build(
            (cached.entry for cached in self._cache.values()), number, now, next_update
        )
        text = pem(der, "X509 CRL")
        write_atomically(self._path, text)
        self.current = PublishedCrl(der, text, number, now, next_update, self._seq,
                                    len(self._cache))
        metrics.CRL_ENTRIES.set(len(self._cache))
        metrics.CRL_NUMBER.set(number)
        metrics.CRL_THIS_UPDATE.set(now.timestamp())
        log.info("CRL %d published: %d entries", number, len(self._cache))
        return self.current

    def _read_new_revocations(self, now: datetime) -> None:
        # Every revocation up to the state's sequence has committed before it is read here.
        committed = self._store.crl_state().revocation_seq
        while True:
            batch = self._store.crl_entries(after_seq=self._seq, limit=READ_BATCH, now=now)
            for entry in batch:
                reason = entry.reason.value if entry.reason is not None else None
                self._cache[entry.serial] = _Cached(
                    revoked_entry(entry.serial_number, entry.revoked_at, reason),
                    entry.expires_at,
                )
                self._seq = max(self._seq, entry.seq)
            if len(batch) < READ_BATCH:
                break
        self._seq = max(self._seq, committed)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock

