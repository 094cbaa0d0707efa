"""The OCSP responder's use case (SPEC 13, RFC 6960): the store says what each serial is, the
CA key in the HSM signs the answer.

The store is read for every request, so a revocation shows here as soon as it has committed,
before the revoke (renew, rotate, re-enroll) response returns. Requests that arrive together
are answered together: one store read for all their serials and one trip to the thread pool
(``_Batcher``); a request joins a read that has not started yet, never one under way, so that
read starts after the request arrived. A response to a request without a nonce is reused
while the store says the same of its certificates and it is younger than ``reuse_for``
(RFC 5019 section 2.1.1 pre-produced responses); one with a nonce is always signed anew.
"""

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import repository
from authority import context
from authority.service import CertsService
from hsm.authority import CertificateAuthority
from hsm.errors import HsmError, HsmUnavailable
from hsm.ocsp import (
    GOOD,
    INTERNAL_ERROR,
    MALFORMED_REQUEST,
    TRY_LATER,
    UNAUTHORIZED,
    UNKNOWN,
    CertStatus,
    OcspResponder,
    revoked,
)
from hsm.ocsp_request import MalformedOcspRequest, OcspRequest, parse_request
from repository import Store
from repository.published import SerialStatus

log = logging.getLogger(__name__)

# A reused response is at most this old (thisUpdate that far back), and at most a tenth of
# its validity.
REUSE_FOR = timedelta(seconds=60)
REUSED_RESPONSES = 4096  # per process; the oldest goes first
BATCH_CERT_IDS = 256  # CertIDs per store read
BATCHES_IN_FLIGHT = 2  # per process: later requests wait and go together


@dataclass(frozen=True, slots=True)
class _Produced:
    statuses: tuple[CertStatus, ...]
    until: float  # time.monotonic() after which it is not reused
    der: bytes


class OcspService:
    """Answers DER OCSP requests about the certificates of the service's CA."""

    def __init__(self, authority: CertificateAuthority, store: Store, validity: timedelta,
                 threads: int = 8, reuse_for: timedelta = REUSE_FOR) -> None:
        self._responder = OcspResponder(authority.ca_certificate, authority.signer)
        self._store = store
        self._validity = validity
        self._reuse_seconds = min(reuse_for, validity / 10).total_seconds()
        self._produced: dict[bytes, _Produced] = {}
        self._produced_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ocsp")
        self._batcher = _Batcher(self._executor, self.sign_all)

    async def answer(self, request_der: bytes) -> bytes:
        """The DER OCSPResponse to ``request_der``; never raises for a bad request or an
        unusable dependency (those are OCSP statuses, sent with HTTP 200)."""
        try:
            request = parse_request(request_der)
        except MalformedOcspRequest:
            return MALFORMED_REQUEST
        context.note(serials=tuple(format(cert_id.serial, "x") for cert_id in request.cert_ids
                                   if cert_id.serial > 0))
        if not self._responder.serves(request):
            return UNAUTHORIZED
        return await self._batcher.submit(request)

    def sign(self, request: OcspRequest, now: datetime | None = None) -> bytes:
        """The signed response to a parsed request about this CA (blocking: store and HSM)."""
        return self.sign_all([request], now)[0]

    def sign_all(self, requests: list[OcspRequest], now: datetime | None = None
                 ) -> list[bytes]:
        """The responses to parsed requests about this CA, in order, after one store read
        (blocking: store and HSM)."""
        try:
            found = self._store.serial_statuses(
                [cert_id.serial for request in requests for cert_id in request.cert_ids])
        except repository.Unavailable:
            log.error("OCSP: database unavailable")
            return [TRY_LATER] * len(requests)
        moment = now or datetime.now(UTC)
        answers = []
        for request in requests:
            statuses = tuple(cert_status(found.get(cert_id.serial))
                             for cert_id in request.cert_ids)
            answers.append(self._response(request, statuses, moment))
        return answers

    def _response(self, request: OcspRequest, statuses: tuple[CertStatus, ...],
                  now: datetime) -> bytes:
        key = b"".join(cert_id.der for cert_id in request.cert_ids)
        clock = time.monotonic()
        if request.nonce is None:
            produced = self._produced.get(key)
            if produced is not None and produced.statuses == statuses and clock < produced.until:
                return produced.der
        try:
            der = self._responder.sign_response(request, statuses, now, self._validity)
        except HsmUnavailable:
            log.error("OCSP: HSM unavailable")
            return TRY_LATER
        except HsmError as exc:
            log.error("OCSP: HSM error: %s", type(exc).__name__)
            return INTERNAL_ERROR
        if request.nonce is None and self._reuse_seconds > 0:
            with self._produced_lock:
                if key not in self._produced and len(self._produced) >= REUSED_RESPONSES:
                    self._produced.pop(next(iter(self._produced)), None)
                self._produced[key] = _Produced(statuses, clock + self._reuse_seconds, der)
        return der

    def close(self) -> None:
        self._executor.shutdown(wait=False)


class _Batcher:
    """Runs ``work`` in ``executor`` on the requests that arrived since the last run started,
    at most ``BATCHES_IN_FLIGHT`` runs at once."""

    def __init__(self, executor: ThreadPoolExecutor,
                 work: Callable[[list[OcspRequest]], list[bytes]]) -> None:
        self._executor = executor
        self._work = work
        self._waiting: list[tuple[OcspRequest, asyncio.Future[bytes]]] = []
        self._in_flight = 0
        self._scheduled = False

    async def submit(self, request: OcspRequest) -> bytes:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bytes] = loop.create_future()
        self._waiting.append((request, answer))
        if not self._scheduled and self._in_flight < BATCHES_IN_FLIGHT:
            # Once the requests read in this turn of the loop have joined.
            self._scheduled = True
            loop.call_soon(self._start, loop)
        return await answer

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        if not self._waiting or self._in_flight >= BATCHES_IN_FLIGHT:
            return
        taken, cert_ids = 0, 0
        while taken < len(self._waiting) and cert_ids < BATCH_CERT_IDS:
            cert_ids += len(self._waiting[taken][0].cert_ids)
            taken += 1
        batch, self._waiting = self._waiting[:taken], self._waiting[taken:]
        try:
            running = self._executor.submit(self._work, [request for request, _ in batch])
        except RuntimeError:  # shut down: the service is closing
            for _, answer in batch:
                if not answer.done():
                    answer.set_result(TRY_LATER)
            return
        self._in_flight += 1
        running.add_done_callback(
            lambda done: loop.call_soon_threadsafe(self._finish, loop, batch, done))
        if self._waiting and self._in_flight < BATCHES_IN_FLIGHT:
            self._scheduled = True
            loop.call_soon(self._start, loop)

    def _finish(self, loop: asyncio.AbstractEventLoop,
                batch: list[tuple[OcspRequest, "asyncio.Future[bytes]"]],
                done: "Future[list[bytes]]") -> None:
        self._in_flight -= 1
        error = done.exception()
        if error is not None:
            log.error("OCSP: %s", type(error).__name__)
        answers = done.result() if error is None else [INTERNAL_ERROR] * len(batch)
        for (_, answer), der in zip(batch, answers, strict=True):
            if not answer.done():
                answer.set_result(der)
        if self._waiting and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start, loop)


def cert_status(found: SerialStatus | None) -> CertStatus:
    """What the response says of a serial: unknown when never issued here."""
    if found is None:
        return UNKNOWN
    if found.revoked_at is None:
        return GOOD
    reason = found.reason.value if found.reason is not None else None
    return revoked(found.revoked_at, reason)


_SERVICES: "weakref.WeakKeyDictionary[CertsService, OcspService]" = weakref.WeakKeyDictionary()


def ocsp_for(service: CertsService) -> OcspService:
    """The responder of ``service``'s CA, built on first use and kept as long as it."""
    found = _SERVICES.get(service)
    if found is None:
        found = OcspService(service.authority, service.store, service.settings.ocsp_validity,
                            threads=service.settings.hsm_pool_size)
        _SERVICES[service] = found
    return found
