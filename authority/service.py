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
    AuthorizationFailed,
    IdentityUnavailable,
    InvalidIdentityRequest,
    KeyType,
    ThingsClient,
)
from authority.requests import IssueRequest, ListQuery
from authority.settings import Settings
from hsm.authority import CertificateAuthority
from hsm.certificate import CLOCK_SKEW, IssuedCertificate
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
        page = await self._blocking(
            functools.partial(
                self.store.list_by_thing, thing_id, offset=query.offset, limit=query.limit,
                serial=query.serial, expires_from=query.expires_from,
                expires_to=query.expires_to,
            )
        )
        return CertificatePage(page.total, page.offset, page.limit,
                               [self._view(record) for record in page.items])

    async def renew(self, token: str, serial: str) -> CertificateView:
        record = await self._blocking(self.store.get, serial)
        await self._authorize(token, record.thing_id, "editor")
        now = datetime.now(UTC)
        if record.expires_at - now > self.settings.renew_window:
            raise BadRequest(msg.NOT_ELIGIBLE)
        request = IssueRequest(record.thing_id, record.private_key_type, record.key_bits,
                               self._capped(lifetime(record.not_before, record.expires_at,
                                                     self.settings.hours_valid)))
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
        except (AuthenticationFailed, AuthorizationFailed):
            raise Unauthenticated(msg.AUTHENTICATION_FAILED) from None
        except InvalidIdentityRequest:
            raise BadRequest(msg.MALFORMED) from None
        except IdentityUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None
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

    async def run_blocking(self, function: Callable[..., T], *args: object) -> T:
        """Run blocking work in the service's threads, with its errors mapped (health checks)."""
        return await self._blocking(function, *args)

    # ---- operator actions (command line; no identity check) -------------------------------

    def issue_as_operator(self, request: IssueRequest) -> CertificateView:
        """Issue and store a certificate for ``request.thing_id`` (blocking)."""
        self._check_ttl(request.ttl)
        return self._issue_and_save(request, request.thing_id)

    def revoke_as_operator(self, serial: str) -> datetime:
        """Revoke by serial and re-sign the CRL before returning (blocking)."""
        return self._revoke(serial)

    # ---- blocking parts (worker threads) --------------------------------------------------

    def _issue_and_save(self, request: IssueRequest, subject: str) -> CertificateView:
        issued = self._sign(request, subject)
        stored = self.store.save(_new_record(request.thing_id, issued))
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
        records = [_new_record(jobs[index][0].thing_id, issued) for index, issued in signed]
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
        replacement = self.store.replace(old_serial, _new_record(request.thing_id, issued),
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

    def _capped(self, ttl: timedelta) -> timedelta:
        """A renewal never outlives the CA; it gets what is left of the CA's validity."""
        return min(ttl, self.authority.not_after - datetime.now(UTC) - timedelta(seconds=1))

    async def _authorize(self, token: str, thing_id: str, action: Action) -> None:
        try:
            await self.things.can_access(token, thing_id, action)
        except AuthenticationFailed:
            raise Unauthenticated(msg.AUTHENTICATION_FAILED) from None
        except AuthorizationFailed:
            raise Forbidden(msg.AUTHORIZATION_FAILED) from None
        except InvalidIdentityRequest:
            raise BadRequest(msg.MALFORMED) from None
        except IdentityUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None

    async def _subject(self, thing_id: str) -> str:
        if self.settings.subject_cn != "thing_key":
            return thing_id
        try:
            return await self.things.thing_key(thing_id)
        except IdentityUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from None
        except (AuthenticationFailed, AuthorizationFailed, InvalidIdentityRequest):
            raise Forbidden(msg.AUTHORIZATION_FAILED) from None

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


def lifetime(not_before: datetime | None, expires_at: datetime, default: timedelta) -> timedelta:
    """The ttl a certificate was issued with (notBefore carries the clock-skew allowance)."""
    if not_before is None:
        return default
    return expires_at - (not_before + CLOCK_SKEW)


def _new_record(thing_id: str, issued: IssuedCertificate) -> NewCertificate:
    return NewCertificate(
        serial=issued.serial_hex,
        thing_id=thing_id,
        certificate_pem=issued.certificate_pem,
        private_key_pem=issued.private_key_pem,
        private_key_type=issued.key_type,
        key_bits=issued.key_bits,
        not_before=issued.not_before,
        expires_at=issued.not_after,
    )
