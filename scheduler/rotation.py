"""The rotation run: renew every active certificate that is due (``authority.renewal.is_due``:
not expired, and at most the renew window and a third of its lifetime left).

A run claims due certificates in small batches with a lease (``Store.claim_expiring``: SKIP
LOCKED on PostgreSQL, a lease everywhere), so any number of scheduler processes can run at
once and each certificate is renewed by one of them. Each batch starts after the last one in
expiry order and a run takes only certificates issued before it started, so it reads each
candidate once and ends even while certificates keep being issued. For each one it makes a new
key of the same type and size, has the HSM sign a certificate with a fresh serial and the same
lifetime (capped at the CA's notAfter), and calls ``Store.replace``: the new certificate, the
old one's revocation (reason superseded) and the rotation event in the outbox are one
transaction.
``Store.replace`` refuses a certificate that is no longer active, so even a claim that outlived
its lease cannot renew a certificate twice.

A certificate that fails (HSM or database error, a key size this service cannot make, a thing
id that cannot be a NATS subject) is logged with its serial and counted; it stays active and
is tried again at the next run. Within a run, failed, skipped and freshly issued certificates
keep their lease until the run ends (so the run neither loops on them nor renews a certificate
it just issued), then their leases are given back. A process killed mid-run leaves only whole
rotations behind; the leases it held run out and a later run takes those certificates.

After rotations the CRL is re-signed to cover the old serials: every few seconds during a long
run and at its end. Blocking work (key generation, HSM, database) runs in threads.
"""

import asyncio
import functools
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import repository
from authority import context, key_policy, tracing
from authority import metrics as observed
from authority.crl_publisher import PublishedCrl
from authority.durations import rfc3339
from authority.records import new_record, same_device_key
from authority.renewal import DUE_DIVISOR, NotRenewable, is_due, renewal_lifetime
from hsm.authority import CertificateAuthority
from hsm.client_keys import generate_client_key
from repository import Certificate, NewEvent, RevocationReason, Store
from repository.audit import Audit
from scheduler import metrics
from scheduler.events import CertEvent, envelope, rotation_subject

log = logging.getLogger("certs.rotation")

SubjectResolver = Callable[[str], Awaitable[str]]

class CrlCoverage(Protocol):
    def ensure_covers(self, revocation_seq: int) -> PublishedCrl: ...


def worker_id() -> str:
    """A lease owner name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Rotated:
    """One certificate renewed by a run."""

    old_serial: str
    new_serial: str
    thing_id: str
    expires_at: datetime
    revocation_seq: int
    event_id: int | None


@dataclass
class RotationReport:
    """What one run did."""

    owner: str
    started_at: datetime
    finished_at: datetime | None = None
    rotated: list[Rotated] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    crl_number: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at) if self.finished_at else None,
            "rotated": [{"old_serial": r.old_serial, "new_serial": r.new_serial,
                         "thing_id": r.thing_id} for r in self.rotated],
            "failed": self.failed,
            "skipped": self.skipped,
            "crl_number": self.crl_number,
        }


class Rotator:
    """Renews due certificates; ``run_once`` is one run (see the module's docstring)."""

    def __init__(
        self,
        authority: CertificateAuthority,
        store: Store,
        crl: CrlCoverage,
        *,
        renew_window: timedelta,
        default_ttl: timedelta,
        owner: str | None = None,
        batch: int = 20,
        lease: timedelta = timedelta(minutes=15),
        concurrency: int = 2,
        crl_interval: float = 5.0,
        subject_for: SubjectResolver | None = None,
        on_rotated: Callable[[], None] | None = None,
        clock: Callable[[], datetime] = _utcnow,
        event_keys: bool = True,
    ) -> None:
        if batch < 1 or concurrency < 1:
            raise ValueError("batch and concurrency must be positive")
        self.authority = authority
        self.store = store
        self.crl = crl
        self.renew_window = renew_window
        self.default_ttl = default_ttl
        self.owner = owner or worker_id()
        self.batch = batch
        self.lease = lease
        self.concurrency = concurrency
        self.crl_interval = crl_interval
        self._subject_for = subject_for
        self._on_rotated = on_rotated
        self._clock = clock
        observed.instrument(authority, store, crl)
        # MF_CERTS_EVENT_KEYS=include: a new server-generated key travels in the event.
        self.event_keys = event_keys

    async def run_once(self) -> RotationReport:
        """Renew everything due now; returns the report (failures are in it, not raised).

        Raises only when claiming itself fails (e.g. the database is down).
        """
        with tracing.span("rotation.run", {"owner": self.owner}):
            return await self._run_once()

    async def _run_once(self) -> RotationReport:
        metrics.ROTATION_RUNS.inc()
        started = self._clock()
        before = started + self.renew_window
        report = RotationReport(self.owner, started)
        held: set[str] = set()
        semaphore = asyncio.Semaphore(self.concurrency)
        uncovered = 0
        last_cover = time.monotonic()
        last: Certificate | None = None
        try:
            while True:
                claimed = await asyncio.to_thread(
                    functools.partial(self.store.claim_expiring, before, self.owner,
                                      limit=self.batch, lease=self.lease, after=started,
                                      issued_before=started, following=last,
                                      due_divisor=DUE_DIVISOR))
                if not claimed:
                    break
                last = claimed[-1]
                due: list[Certificate] = []
                for cert in claimed:
                    if cert.serial in held or not is_due(
                            cert.not_before, cert.expires_at, started, self.renew_window):
                        # Already tried, or not due yet (more than a third of its lifetime
                        # left): kept leased until the run ends. (The claim leaves out what
                        # was issued during this run.)
                        held.add(cert.serial)
                    else:
                        due.append(cert)
                results = await asyncio.gather(
                    *(self._rotate_guarded(cert, semaphore, report, held) for cert in due))
                done = [result for result in results if result is not None]
                if done:
                    uncovered = max(uncovered, *(result.revocation_seq for result in done))
                    if self._on_rotated is not None:
                        self._on_rotated()
                if uncovered and time.monotonic() - last_cover >= self.crl_interval:
                    await self._cover(uncovered, report)
                    uncovered, last_cover = 0, time.monotonic()
            if uncovered:
                await self._cover(uncovered, report)
        finally:
            if held:
                await self._release(held)
            report.finished_at = self._clock()
            metrics.ROTATION_LAST_RUN.set(time.time())
            log.info(json.dumps({
                "msg": "rotation run", "owner": self.owner, "rotated": len(report.rotated),
                "failed": len(report.failed), "skipped": len(report.skipped),
                "seconds": round((report.finished_at - started).total_seconds(), 3),
            }))
        return report

    async def _rotate_guarded(
        self, cert: Certificate, semaphore: asyncio.Semaphore, report: RotationReport,
        held: set[str],
    ) -> Rotated | None:
        async with semaphore:
            try:
                subject = await self._subject(cert.thing_id)
                result = await asyncio.to_thread(self.rotate, cert, subject)
            except repository.NotFound:
                # Revoked, or renewed by someone else after the claim: nothing to do.
                report.skipped.append(cert.serial)
                metrics.ROTATIONS_SKIPPED.inc()
                return None
            except NotRenewable as exc:
                held.add(cert.serial)
                report.skipped.append(cert.serial)
                metrics.ROTATIONS_SKIPPED.inc()
                log.warning(json.dumps({"msg": "certificate not renewed", "serial": cert.serial,
                                        "thing_id": cert.thing_id, "reason": str(exc)}))
                return None
            except Exception as exc:  # noqa: BLE001 - one certificate must not stop the run
                held.add(cert.serial)
                report.failed.append(cert.serial)
                metrics.ROTATION_FAILURES.inc()
                log.error(json.dumps({"msg": "rotation failed", "serial": cert.serial,
                                      "thing_id": cert.thing_id,
                                      "error": f"{type(exc).__name__}: {exc}"}))
                return None
        report.rotated.append(result)
        metrics.ROTATIONS.inc()
        log.info(json.dumps({"msg": "certificate rotated", "thing_id": result.thing_id,
                             "old_serial": result.old_serial, "new_serial": result.new_serial,
                             "expires_at": rfc3339(result.expires_at)}))
        return result

    async def _subject(self, thing_id: str) -> str:
        if self._subject_for is None:
            return thing_id
        return await self._subject_for(thing_id)

    def rotate(self, cert: Certificate, subject: str) -> Rotated:
        """Renew one certificate (blocking): sign a new one, then replace atomically.

        Raises ``repository.NotFound`` when the certificate is no longer active,
        ``NotRenewable`` when the CA expires too soon, ValueError for an unusable thing id or
        key size, and the HSM's and store's errors.
        """
        topic = rotation_subject(cert.thing_id)
        issue_at = datetime.now(UTC).replace(microsecond=0)  # certificates have whole seconds
        ttl = renewal_lifetime(not_before=cert.not_before, expires_at=cert.expires_at,
                               default_ttl=self.default_ttl,
                               ca_not_after=self.authority.not_after, now=issue_at)
        key = same_device_key(cert)
        if key is None:
            spec = key_policy.generated_key(cert.private_key_type, cert.key_bits)
            key = generate_client_key(spec.key_type, spec.key_bits)
        issued = self.authority.issue(subject, key, ttl, now=issue_at)
        new = new_record(cert.thing_id, issued, owner_id=cert.owner_id)
        event = CertEvent(
            thing_id=cert.thing_id, client_cert=issued.certificate_pem,
            client_key=issued.private_key_pem if self.event_keys else "",
            issuing_ca=self.authority.ca_chain[0],
            ca_chain=list(self.authority.ca_chain), serial=issued.serial_hex,
            expires_at=rfc3339(issued.not_after),
        )
        replacement = self.store.replace(
            cert.serial, new, reason=RevocationReason.SUPERSEDED,
            event=NewEvent(subject=topic, payload=envelope(event)),
            audit=Audit(actor=context.SCHEDULER, action="rotation"),
        )
        return Rotated(
            old_serial=replacement.revocation.serial, new_serial=issued.serial_hex,
            thing_id=cert.thing_id, expires_at=issued.not_after,
            revocation_seq=replacement.revocation.seq, event_id=replacement.event_id,
        )

    async def _cover(self, revocation_seq: int, report: RotationReport) -> None:
        try:
            published = await asyncio.to_thread(self.crl.ensure_covers, revocation_seq)
        except Exception as exc:  # noqa: BLE001 - retried by the CRL timer
            # The CRL refresh timer re-signs as soon as it can (the store's seq is ahead).
            log.error(json.dumps({"msg": "CRL not re-signed after rotation",
                                  "error": f"{type(exc).__name__}: {exc}"}))
            return
        report.crl_number = published.number

    async def _release(self, serials: set[str]) -> None:
        try:
            await asyncio.to_thread(self.store.release_claims, serials, self.owner)
        except Exception as exc:  # noqa: BLE001 - leases run out anyway
            log.warning(json.dumps({"msg": "claims not released; their leases will run out",
                                    "error": f"{type(exc).__name__}: {exc}"}))
