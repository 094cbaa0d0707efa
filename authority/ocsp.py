"""The OCSP responder's use case (SPEC 13, RFC 6960): the store says what each serial is, the
CA key in the HSM signs the answer.

The store is read for every request, so a revocation shows here as soon as it has committed,
before the revoke (renew, rotate, re-enroll) response returns. Requests that arrive together
are answered together (``authority.batching``): one store read for all their serials and one
trip to the thread pool; a request joins a read that has not started yet, never one under way,
so that read starts after the request arrived. A response to a request without a nonce is
reused while the store says the same of its certificates and the clock is still in the second
of its thisUpdate (RFC 5019 section 2.1.1 pre-produced responses): thisUpdate and nextUpdate
are encoded to the second, so a reused response says exactly what a new one would. One with a
nonce is always signed anew.
"""

import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import repository
from authority import context
from authority.batching import Batcher
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

REUSED_RESPONSES = 4096  # per process; the oldest goes first
BATCH_REQUESTS = 256  # requests per store read
BATCHES_IN_FLIGHT = 2  # per process: later requests wait and go together


@dataclass(frozen=True, slots=True)
class _Produced:
    statuses: tuple[CertStatus, ...]
    second: int  # thisUpdate, POSIX seconds
    der: bytes


class OcspService:
    """Answers DER OCSP requests about the certificates of the service's CA."""

    def __init__(self, authority: CertificateAuthority, store: Store, validity: timedelta,
                 threads: int = 8, reuse: bool = True) -> None:
        self._responder = OcspResponder(authority.ca_certificate, authority.signer)
        self._store = store
        self._validity = validity
        self._reuse = reuse
        self._produced: dict[bytes, _Produced] = {}
        self._produced_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ocsp")
        self._batcher: Batcher[OcspRequest, bytes] = Batcher(
            self.sign_all, self._executor, max_batch=BATCH_REQUESTS,
            max_running=BATCHES_IN_FLIGHT)

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
        try:
            return await self._batcher.submit(request)
        except RuntimeError:  # the thread pool is shut down: the service is closing
            return TRY_LATER
        except Exception as exc:  # noqa: BLE001 - an OCSP status, never an HTTP 500
            log.error("OCSP: %s", type(exc).__name__)
            return INTERNAL_ERROR

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
        moment = (now or datetime.now(UTC)).replace(microsecond=0)
        answers = []
        for request in requests:
            statuses = tuple(cert_status(found.get(cert_id.serial))
                             for cert_id in request.cert_ids)
            answers.append(self._response(request, statuses, moment))
        return answers

    def _response(self, request: OcspRequest, statuses: tuple[CertStatus, ...],
                  now: datetime) -> bytes:
        key = b"".join(cert_id.der for cert_id in request.cert_ids)
        second = int(now.timestamp())
        if request.nonce is None:
            produced = self._produced.get(key)
            if produced is not None and produced.statuses == statuses \
                    and produced.second == second:
                return produced.der
        try:
            der = self._responder.sign_response(request, statuses, now, self._validity)
        except HsmUnavailable:
            log.error("OCSP: HSM unavailable")
            return TRY_LATER
        except HsmError as exc:
            log.error("OCSP: HSM error: %s", type(exc).__name__)
            return INTERNAL_ERROR
        if request.nonce is None and self._reuse:
            with self._produced_lock:
                if key not in self._produced and len(self._produced) >= REUSED_RESPONSES:
                    self._produced.pop(next(iter(self._produced)), None)
                self._produced[key] = _Produced(statuses, second, der)
        return der

    def close(self) -> None:
        self._executor.shutdown(wait=False)


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
