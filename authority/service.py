"""The certs service's use cases (SPEC section 3), independent of HTTP.

Identity checks are awaited on the event loop; key generation, HSM signing and database work
run in a thread pool, so the loop never blocks. EC issuance is grouped (server/batching.py):
requests that arrive while a batch is being issued are signed together and stored in one
transaction.
"""

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import repository
from authority import errors as msg
from authority.batching import Batcher
from authority.crl_publisher import CrlPublisher, PublishedCrl
from authority.errors import BadRequest, Forbidden, NotFound, ServiceError, Unauthenticated
from authority.errors import Unavailable as ServiceUnavailable
from authority.identity import (
    Action,
    AuthenticationFailed,
    IdentityError,
    IdentityUnavailable,
    InvalidIdentityRequest,
    KeyType,
    ThingsClient,
)
from authority.records import new_record
from authority.renewal import NotRenewable, renewal_lifetime
from authority.requests import IssueRequest, ListQuery, issue_request
from authority.settings import Settings
from hsm.authority import CertificateAuthority
from hsm.certificate import IssuedCertificate
from hsm.client_keys import generate_client_key
from hsm.errors import HsmError, HsmUnavailable
from repository import NewCertificate, RevocationReason, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class CertificateView:
    """A certificate as the API shows it; ``private_key`` only where the SPEC returns it."""

    serial: str
    thing_id: str
    certificate: str
    issuing_ca: str
    ca_chain: list[str]
    private_key: str | None
    private_key_type: str
    key_bits: int
    expires_at: datetime
    downloaded: bool


@dataclass(frozen=True)
class CertificatePage:
    total: int
    offset: int
    limit: int
    certs: list[CertificateView]


class CertsService:
    """Issue, view, list, renew, rotate, revoke and download client certificates."""

    def __init__(
        self,
        settings: Settings,
        authority: CertificateAuthority,
        store: Store,
        things: ThingsClient,
        crl: CrlPublisher,
        threads: int = 8,
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.store = store
        self.things = things
        self.crl = crl
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="certs")
        self._issuer: Batcher[tuple[IssueRequest, str], CertificateView] = Batcher(
            self._issue_batch, self._executor, max_running=max(1, threads // 8))
        self._first_crl: asyncio.Task[None] | None = None

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def issue_request(self, body: object) -> IssueRequest:
        """An issue or rotate body checked, completed with the configured defaults."""
        return issue_request(body, self.settings.hours_valid, self.settings.rsa_bits)

    # ---- use cases ----------------------------------------------------------------------

    async def issue(self, token: str, request: IssueRequest) -> CertificateView:
        self._check_ttl(request.ttl)
        await self._authorize(token, request.thing_id, "editor")
        subject = await self._subject(request.thing_id)
        if request.key_type == "rsa":
            # Generating an RSA key takes tens of milliseconds: RSA requests would only make
            # each other wait in a batch, so each gets a thread of its own.
            return await self._blocking(self._issue_and_save, request, subject)
        try:
            return await self._issuer.submit((request, subject))
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
            raise _service_error(exc) from None

    async def view(self, token: str, serial: str) -> CertificateView:
        record = await self._blocking(self.store.get, serial)
        await self._authorize(token, record.thing_id, "viewer")
        return self._view(record)

    async def list_certificates(
        self, token: str, thing_id: str, query: ListQuery
    ) -> CertificatePage:
        await self._authorize(token, thing_id, "viewer")
        return await self._blocking(self._list, thing_id, query)

    async def renew(self, token: str, serial: str) -> CertificateView:
        record = await self._blocking(self.store.get, serial)
        await self._authorize(token, record.thing_id, "editor")
        now = datetime.now(UTC)
        if record.expires_at - now > self.settings.renew_window:
            raise BadRequest(msg.NOT_ELIGIBLE)
        try:
            ttl = renewal_lifetime(not_before=record.not_before, expires_at=record.expires_at,
                                   default_ttl=self.settings.hours_valid,
                                   ca_not_after=self.authority.not_after,
                                   now=now.replace(microsecond=0))
        except NotRenewable:
            raise BadRequest(msg.NOT_RENEWABLE) from None
        request = IssueRequest(record.thing_id, record.private_key_type, record.key_bits, ttl)
        subject = await self._subject(record.thing_id)
        await self.crl_ready()
        return await self._blocking(self._replace, record.serial, request, subject)

    async def rotate(self, token: str, serial: str, request: IssueRequest) -> CertificateView:
        self._check_ttl(request.ttl)
        record = await self._blocking(self.store.get, serial)
        await self._authorize(token, record.thing_id, "editor")
        if request.thing_id != record.thing_id:
            raise Forbidden(msg.AUTHORIZATION_FAILED)
        subject = await self._subject(record.thing_id)
        await self.crl_ready()
        return await self._blocking(self._replace, record.serial, request, subject)

    async def revoke(self, token: str, serial: str) -> datetime:
        try:
            record = await self._blocking(self.store.get, serial)
        except NotFound:
            raise NotFound(msg.REVOKE_NOT_FOUND) from None
        await self._authorize(token, record.thing_id, "editor")
        await self.crl_ready()
        return await self._blocking(self._revoke, record.serial)

    async def download(self, key_type: KeyType, key: str, serial: str) -> CertificateView:
        try:
            thing_id = await self.things.identify_thing(key, key_type)
        except IdentityError as exc:
            unauthenticated = Unauthenticated(msg.AUTHENTICATION_FAILED)
            raise _identity_error(exc, denied=unauthenticated,
                                  unauthenticated=unauthenticated) from None
        record = await self._blocking(self.store.get, serial)
        if record.thing_id != thing_id:
            raise Forbidden(msg.AUTHORIZATION_FAILED)
        downloaded = await self._blocking(self.store.mark_downloaded, record.serial, thing_id)
        return self._view(downloaded)

    async def current_crl(self) -> PublishedCrl:
        await self.crl_ready()
        return await self._blocking(self.crl.ensure_current)

    def start_first_crl(self) -> None:
        """Build this process's first CRL in the background (it reads and encodes every
        revocation: seconds with a million of them), so that serving starts at once."""
        self._first_crl = asyncio.get_running_loop().create_task(self._build_first_crl())

    async def crl_ready(self) -> None:
        """Wait until the first CRL build has ended, without holding one of the threads: the
        requests that need the CRL would otherwise fill the pool waiting for its lock."""
        if self._first_crl is not None:
            await asyncio.wait({self._first_crl})

    async def _build_first_crl(self) -> None:
        try:
            await self._blocking(self.crl.ensure_current)
        except Exception as exc:  # noqa: BLE001 - the next request that needs the CRL retries
            log.warning("the first CRL was not built at start (%s)", type(exc).__name__)

    # ---- operator actions (command line; no identity check) -------------------------------

    def issue_as_operator(self, request: IssueRequest) -> CertificateView:
        """Issue and store a certificate for ``request.thing_id`` (blocking)."""
        self._check_ttl(request.ttl)
        return self._issue_and_save(request, request.thing_id)

    def revoke_as_operator(self, serial: str) -> datetime:
        """Revoke by serial and re-sign the CRL before returning (blocking)."""
        return self._revoke(serial)

    def list_as_operator(self, thing_id: str, query: ListQuery) -> CertificatePage:
        """A page of the thing's active certificates (blocking)."""
        return self._list(thing_id, query)

    def publish_crl(self) -> PublishedCrl:
        """Sign the CRL now and write it to MF_CERTS_CRL_PATH (blocking)."""
        return self.crl.publish()

    # ---- blocking parts (worker threads) --------------------------------------------------

    def _list(self, thing_id: str, query: ListQuery) -> CertificatePage:
        page = self.store.list_by_thing(
            thing_id, offset=query.offset, limit=query.limit, serial=query.serial,
            expires_from=query.expires_from, expires_to=query.expires_to)
        return CertificatePage(page.total, page.offset, page.limit,
                               [self._view(record) for record in page.items])

    def _issue_and_save(self, request: IssueRequest, subject: str) -> CertificateView:
        issued = self._sign(request, subject)
        stored = self.store.save(new_record(request.thing_id, issued))
        return self._view(stored, issued.private_key_pem)

    def _issue_batch(self, jobs: list[tuple[IssueRequest, str]]
                     ) -> list[CertificateView | Exception]:
        outcomes: list[CertificateView | Exception | None] = [None] * len(jobs)
        signed: list[tuple[int, IssuedCertificate]] = []
        unavailable: HsmUnavailable | None = None
        for index, (request, subject) in enumerate(jobs):
            if unavailable is not None:
                # Each attempt would wait out MF_CERTS_HSM_TIMEOUT again, one after another.
                outcomes[index] = unavailable
                continue
            try:
                signed.append((index, self._sign(request, subject)))
            except HsmUnavailable as exc:
                outcomes[index] = unavailable = exc
            except HsmError as exc:
                outcomes[index] = exc
        records = [new_record(jobs[index][0].thing_id, issued) for index, issued in signed]
        for (index, issued), stored in zip(signed, self._save_all(records), strict=True):
            outcomes[index] = stored if isinstance(stored, Exception) else \
                self._view(stored, issued.private_key_pem)
        return [outcome for outcome in outcomes if outcome is not None]

    def _save_all(self, records: list[NewCertificate]
                  ) -> list[repository.Certificate | Exception]:
        try:
            return list(self.store.save_many(records))
        except repository.Conflict:
            # A serial collided (all but impossible with 159 random bits): store them one by
            # one, so that only the colliding certificate fails.
            return [self._save_one(record) for record in records]

    def _save_one(self, record: NewCertificate) -> repository.Certificate | Exception:
        try:
            return self.store.save(record)
        except repository.Conflict as exc:
            return exc

    def _replace(self, old_serial: str, request: IssueRequest, subject: str) -> CertificateView:
        issued = self._sign(request, subject)
        replacement = self.store.replace(old_serial, new_record(request.thing_id, issued),
                                         reason=RevocationReason.SUPERSEDED)
        self.crl.ensure_covers(replacement.revocation.seq)
        return self._view(replacement.certificate, issued.private_key_pem)

    def _revoke(self, serial: str) -> datetime:
        try:
            revocation = self.store.revoke(serial, reason=RevocationReason.UNSPECIFIED)
        except repository.NotFound:
            raise NotFound(msg.REVOKE_NOT_FOUND) from None
        self.crl.ensure_covers(revocation.seq)
        return revocation.revoked_at

    def _sign(self, request: IssueRequest, subject: str) -> IssuedCertificate:
        key = generate_client_key(request.key_type, request.key_bits)
        return self.authority.issue(subject, key, request.ttl)

    # ---- helpers --------------------------------------------------------------------------

    def _check_ttl(self, ttl: timedelta) -> None:
        if datetime.now(UTC) + ttl > self.authority.not_after:
            raise BadRequest(msg.INVALID_TTL)

    async def _authorize(self, token: str, thing_id: str, action: Action) -> None:
        try:
            await self.things.can_access(token, thing_id, action)
        except IdentityError as exc:
            raise _identity_error(exc, denied=Forbidden(msg.AUTHORIZATION_FAILED)) from None

    async def _subject(self, thing_id: str) -> str:
        if self.settings.subject_cn != "thing_key":
            return thing_id
        try:
            return await self.things.thing_key(thing_id)
        except IdentityError as exc:
            forbidden = Forbidden(msg.AUTHORIZATION_FAILED)
            raise _identity_error(exc, denied=forbidden, unauthenticated=forbidden,
                                  invalid=forbidden) from None

    async def _blocking(self, function: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(function, *args))
        except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
            raise _service_error(exc) from None

    def _view(self, record: repository.Certificate, private_key: str | None = None
              ) -> CertificateView:
        return CertificateView(
            serial=record.serial,
            thing_id=record.thing_id,
            certificate=record.certificate_pem,
            issuing_ca=record.issuing_ca or self.authority.ca_chain[0],
            ca_chain=list(record.ca_chain or self.authority.ca_chain),
            private_key=private_key if private_key is not None else record.private_key_pem,
            private_key_type=record.private_key_type,
            key_bits=record.key_bits,
            expires_at=record.expires_at,
            downloaded=record.downloaded,
        )


def _identity_error(
    exc: IdentityError,
    *,
    denied: ServiceError,
    unauthenticated: ServiceError | None = None,
    invalid: ServiceError | None = None,
) -> ServiceError:
    """The API error for a failed identity call (SPEC 4): ``denied`` for a refused permission
    (or thing key); a rejected token is 401, a malformed request 400 unless the caller says
    otherwise, and an unreachable identity service 503."""
    if isinstance(exc, IdentityUnavailable):
        return ServiceUnavailable(str(exc))
    if isinstance(exc, InvalidIdentityRequest):
        return invalid or BadRequest(msg.MALFORMED)
    if isinstance(exc, AuthenticationFailed):
        return unauthenticated or Unauthenticated(msg.AUTHENTICATION_FAILED)
    return denied


def _service_error(exc: Exception) -> Exception:
    """The API error for a failure of the blocking work; anything unexpected as it is."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, repository.NotFound):
        return NotFound(msg.ENTITY_NOT_FOUND)
    if isinstance(exc, repository.NotOwner):
        return Forbidden(msg.AUTHORIZATION_FAILED)
    if isinstance(exc, repository.AlreadyDownloaded):
        return Forbidden(msg.ALREADY_DOWNLOADED)
    if isinstance(exc, repository.Unavailable):
        log.error("database unavailable")
        return ServiceUnavailable(msg.DATABASE_UNAVAILABLE)
    if isinstance(exc, HsmUnavailable):
        log.error("HSM unavailable")
        return ServiceUnavailable(msg.SIGNING_UNAVAILABLE)
    if isinstance(exc, HsmError):
        log.error("HSM error: %s", type(exc).__name__)
        return ServiceUnavailable(msg.SIGNING_UNAVAILABLE)
    return exc


