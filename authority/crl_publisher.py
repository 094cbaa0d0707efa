"""The service's CRL (SPEC 7): rebuilt from the store after revocations and before it goes
stale, and one for the whole service.

Each revocation's CRL entry is encoded once, when it is revoked, and stored with it
(``Store.encode_crl_entries``); a process reads the stored entries in large blocks (one
aggregated row each on PostgreSQL) and keeps them in seq order (``RevokedEntries``), and the
store's revocation sequence says which revocations a published CRL already covers, so a
rebuild reads only newer ones. Revocations stored without their entry
(before migration 0006, or imported) are encoded when first read and the entry stored. A CRL
number is taken together with the newest revocation's seq, and the CRL lists exactly the
revocations up to it, so a higher number never lists less (but what expired).

The newest signed CRL is kept in the store (written only over an older one) before any process
serves it, and every process serves the stored one whenever it is newer than its own: whichever
worker or replica answers, a client never sees the number go back, and one number always has
the same bytes (it was signed once, by one process).
"""

import fcntl
import logging
import os
import tempfile
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from authority import metrics
from authority.crl_entries import RevokedEntries
from authority.files import write_atomically
from hsm.authority import CertificateAuthority
from hsm.crl import revoked_entry
from hsm.der import pem
from repository import Revocation, Store
from repository.crl_block import CrlEntryBlock
from repository.published import StoredCrlHeader
from repository.store import SealCrl

log = logging.getLogger(__name__)
T = TypeVar("T")
READ_BATCH = 250_000


@dataclass(frozen=True)
class PublishedCrl:
    der: bytes
    pem: str
    number: int
    this_update: datetime
    next_update: datetime
    revocation_seq: int
    entries: int


class CrlPublisher:
    """Builds, signs, stores and writes the CRL; thread-safe, one rebuild at a time."""

    def __init__(
        self, authority: CertificateAuthority, store: Store, path: str, validity: timedelta
    ) -> None:
        self._authority = authority
        self._store = store
        self._path = Path(path)
        self._validity = validity
        self._lock = threading.Lock()
        # The unexpired revocations read so far (up to seq self._seq), in seq order.
        self._entries = RevokedEntries()
        self._seq = 0
        store.encode_crl_entries(revoked_entry)
        self.current: PublishedCrl | None = None
        # Why the last write of the file failed (None once a write succeeds). The CRL is still
        # published over HTTP; /health reports this.
        self.write_error: str | None = None

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

    def revoking(self, revoke: Callable[[SealCrl], T]) -> T:
        """Run ``revoke`` (a store call taking a ``seal``) so that the CRL listing its
        revocations is signed before they commit: when the HSM cannot sign, nothing is
        revoked. The signed CRL is then stored with them, served and written to the file."""
        with self._lock:
            sealed: list[PublishedCrl] = []

            def seal(number: int, covered: int, revocations: Sequence[Revocation]
                     ) -> tuple[StoredCrlHeader, bytes]:
                sealed.clear()  # a transaction retried on a fresh connection seals again
                crl = self._sign_with(number, covered, revocations)
                sealed.append(crl)
                return StoredCrlHeader(number, covered, crl.this_update, crl.next_update,
                                       crl.entries), crl.der

            result = revoke(seal)
            if sealed:
                with _file_lock(Path(f"{self._path}.lock")) as written:
                    self._serve(sealed[0], written)
                log.info("CRL %d published with the revocation: %d entries",
                         sealed[0].number, sealed[0].entries)
            return result

    def _sign_with(self, number: int, covered: int, revocations: Sequence[Revocation]
                   ) -> PublishedCrl:
        """The CRL numbered ``number``: the committed revocations before the first of
        ``revocations`` (all committed: the revoking transaction holds the revocation row),
        then ``revocations`` themselves, which stay out of the cache until they commit."""
        first = min(revocation.seq for revocation in revocations)
        self._read_revocations(first - 1)
        now = datetime.now(UTC).replace(microsecond=0)
        self._entries.drop_expired(now.timestamp())
        listed, count = self._entries.upto(first - 1)
        # The store encodes each revocation's entry with the encoder set in __init__.
        added = [revocation.crl_entry for revocation in revocations
                 if revocation.crl_entry is not None]
        next_update = now + self._validity
        der = self._authority.crls.build([listed, *added], number, now, next_update)
        return PublishedCrl(der, pem(der, "X509 CRL"), number, now, next_update, covered,
                            count + len(added))

    def ensure_current(self) -> PublishedCrl:
        """The newest CRL of the service: the stored one when another process signed a newer
        one, a new one when something was revoked since or half the validity has passed."""
        outlook = self._store.crl_outlook()
        with self._lock:
            stored = outlook.stored
            if stored is not None and (self.current is None
                                       or stored.number > self.current.number):
                self._adopt_stored()
            current = self.current
            if (current is None or current.revocation_seq < outlook.revocation_seq
                    or datetime.now(UTC) >= current.this_update + self._validity / 2):
                return self._publish_locked()
            return current

    def _publish_locked(self) -> PublishedCrl:
        # The bulk of the new revocations is read and encoded first, so that processes building
        # their first CRL do not queue behind each other on the file lock.
        self._read_revocations(self._store.crl_state().revocation_seq)
        # Processes sharing the file publish one at a time, so numbers are taken in the order
        # the file is written.
        with _file_lock(Path(f"{self._path}.lock")) as written:
            return self._publish_exclusively(written)

    def _publish_exclusively(self, written: "_WrittenNumber") -> PublishedCrl:
        number, covered = self._store.take_crl_number()
        self._read_revocations(covered)
        now = datetime.now(UTC).replace(microsecond=0)
        self._entries.drop_expired(now.timestamp())
        next_update = now + self._validity
        listed, count = self._entries.upto(covered)
        der = self._authority.crls.build([listed], number, now, next_update)
        crl = PublishedCrl(der, pem(der, "X509 CRL"), number, now, next_update, covered, count)
        header = StoredCrlHeader(number, covered, now, next_update, count)
        if not self._store.store_crl(header, der):
            # Another process stored a newer CRL meanwhile: serving this one after it would
            # take the number back.
            log.info("CRL %d signed, but a newer one is stored", number)
            self._adopt_stored(written)
            assert self.current is not None
            return self.current
        self._serve(crl, written)
        log.info("CRL %d published: %d entries", number, count)
        return crl

    def _adopt_stored(self, written: "_WrittenNumber | None" = None) -> None:
        """Serve the stored CRL (newer than this process's own) and write it to the file."""
        found = self._store.stored_crl()
        if found is None or (self.current is not None and found[0].number <= self.current.number):
            return
        header, der = found
        crl = PublishedCrl(der, pem(der, "X509 CRL"), header.number, header.this_update,
                           header.next_update, header.revocation_seq, header.entries)
        if written is not None:
            self._serve(crl, written)
            return
        with _file_lock(Path(f"{self._path}.lock")) as lock:
            self._serve(crl, lock)

    def _serve(self, crl: PublishedCrl, written: "_WrittenNumber") -> None:
        if written.number() < crl.number or not self._path.exists():
            if self._write(crl.pem, crl.number):
                written.record(crl.number)
        self.current = crl
        metrics.CRL_ENTRIES.set(crl.entries)
        metrics.CRL_NUMBER.set(crl.number)
        metrics.CRL_THIS_UPDATE.set(crl.this_update.timestamp())

    def _write(self, text: str, number: int) -> bool:
        try:
            write_atomically(self._path, text)
        except OSError as exc:
            self.write_error = f"{self._path}: {exc.strerror or exc}"
            log.error("CRL %d signed but not written to %s (MF_CERTS_CRL_PATH): %s; it is "
                      "served over HTTP", number, self._path, exc.strerror or exc)
            return False
        self.write_error = None
        return True

    def _read_revocations(self, upto: int) -> None:
        """Read the stored CRL entries after the ones read so far, up to seq ``upto`` (every
        one of them has committed: ``upto`` was read from the store)."""
        now = datetime.now(UTC)
        while self._seq < upto:
            block = self._store.crl_entry_block(after_seq=self._seq, through_seq=upto,
                                                limit=READ_BATCH, now=now)
            if block.missing:
                encoded = self._encode_missing(self._seq, block.seqs[-1], now)
                # Read again: with the entries stored now, by this process or another one.
                block = self._store.crl_entry_block(after_seq=self._seq, through_seq=upto,
                                                    limit=READ_BATCH, now=now)
                if block.missing:  # storing them failed
                    block = _filled(block, encoded)
            self._entries.append(block)
            if len(block) < READ_BATCH:
                break
            self._seq = block.seqs[-1]
        self._seq = max(self._seq, upto)

    def _encode_missing(self, after: int, through: int, now: datetime) -> dict[int, bytes]:
        """Encode the revocations in (after, through] stored without their CRL entry, and
        store the entries."""
        encoded = {
            entry.seq: revoked_entry(entry.serial_number, entry.revoked_at,
                                     entry.reason.value if entry.reason is not None else None)
            for entry in self._store.crl_entries_missing(after_seq=after, through_seq=through,
                                                         now=now)
        }
        try:
            self._store.keep_crl_entries(encoded)
        except Exception as exc:  # noqa: BLE001 - the next build encodes them again
            log.warning("CRL entries not stored (%s)", type(exc).__name__)
        return encoded


def _filled(block: CrlEntryBlock, encoded: dict[int, bytes]) -> CrlEntryBlock:
    """``block`` with the entries it lacks taken from ``encoded``."""
    ders: list[bytes] = []
    lengths = array("q")
    offset = 0
    for seq, length in zip(block.seqs, block.lengths, strict=True):
        if length < 0:
            der = encoded[seq]
        else:
            der = block.der[offset:offset + length]
            offset += length
        ders.append(der)
        lengths.append(len(der))
    return CrlEntryBlock(block.seqs, lengths, block.expiry, b"".join(ders))


class _WrittenNumber:
    """The number of the CRL last written to the file by any process of this host, kept in
    the lock file (read and written only while it is locked); 0 when unknown."""

    def __init__(self, descriptor: int | None) -> None:
        self._descriptor = descriptor

    def number(self) -> int:
        if self._descriptor is None:
            return 0
        try:
            return int(os.pread(self._descriptor, 32, 0).decode().strip() or 0)
        except (OSError, ValueError):
            return 0

    def record(self, number: int) -> None:
        if self._descriptor is None:
            return
        try:
            os.ftruncate(self._descriptor, 0)
            os.pwrite(self._descriptor, f"{number}\n".encode(), 0)
        except OSError:
            pass


@contextmanager
def _file_lock(path: Path) -> Iterator[_WrittenNumber]:
    """The lock shared by the processes writing the file; none when it cannot be created
    (the path is unwritable: the write fails too and is reported, the CRL is still served)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        descriptor = None
    try:
        if descriptor is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield _WrittenNumber(descriptor)
    finally:
        if descriptor is not None:
            os.close(descriptor)  # closing the descriptor releases the lock


def crl_file_problem(path: Path) -> str | None:
    """Why the CRL file cannot be written at `path` now (its folder is created if missing), or
    None: a temporary file is created next to it and removed, as the atomic write does."""
    if path.is_dir():
        return "it is a directory"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.probe.", dir=path.parent):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
