"""The OCSP responder's use case (SPEC 13, RFC 6960): the store says what each serial is, the
CA key in the HSM signs the answer.

The store is read for every request, so a revocation shows here as soon as it has committed,
before the revoke (renew, rotate, re-enroll) response returns. Reading and signing run in a
small thread pool of their own; the event loop only parses the request.
"""

import asyncio
import contextvars
import functools
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
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


class OcspService:
    """Answers DER OCSP requests about the certificates of the service's CA."""

    def __init__(self, authority: CertificateAuthority, store: Store, validity: timedelta,
                 threads: int = 8) -> None:
        self._responder = OcspResponder(authority.ca_certificate, authority.signer)
        self._store = store
        self._validity = validity
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ocsp")

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
        loop = asyncio.get_running_loop()
        work = functools.partial(contextvars.copy_context().run, self.sign, request)
        return await loop.run_in_executor(self._executor, work)

    def sign(self, request: OcspRequest, now: datetime | None = None) -> bytes:
        """The signed response to a parsed request about this CA (blocking: store and HSM)."""
        try:
            found = self._store.serial_statuses([cert_id.serial for cert_id in request.cert_ids])
            statuses = [cert_status(found.get(cert_id.serial)) for cert_id in request.cert_ids]
            return self._responder.sign_response(request, statuses, now or datetime.now(UTC),
                                                 self._validity)
        except repository.Unavailable:
            log.error("OCSP: database unavailable")
            return TRY_LATER
        except HsmUnavailable:
            log.error("OCSP: HSM unavailable")
            return TRY_LATER
        except HsmError as exc:
            log.error("OCSP: HSM error: %s", type(exc).__name__)
            return INTERNAL_ERROR

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

