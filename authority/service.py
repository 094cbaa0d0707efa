"""The certs service's use cases (SPEC section 3), independent of HTTP.

Identity checks are awaited on the event loop; key generation, HSM signing and database work
run in a thread pool, so the loop never blocks. EC issuance is grouped (server/batching.py):
requests that arrive while a batch is being issued are signed together and stored in one
transaction.
"""

import asyncio
import contextvars
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import repository
from authority import context, tracing
from authority import errors as msg
from authority import metrics as observed
from authority.batching import Batcher
from authority.crl_publisher import CrlPublisher, PublishedCrl
from authority.errors import BadRequest, Forbidden, NotFound, ServiceError, Unauthenticated
from authority.errors import Unavailable as ServiceUnavailable
from authority.identity import (
    Action,
    AuthClient,
    AuthenticationFailed,
    IdentityError,
    IdentityUnavailable,
    InvalidIdentityRequest,
    KeyType,
    ThingsClient,
)
from authority.records import new_record, same_device_key
from authority.renewal import NotRenewable, renewal_lifetime
from authority.requests import IssueRequest, ListQuery, issue_request
from authority.settings import Settings
from hsm.authority import CertificateAuthority
from hsm.certificate import IssuedCertificate
from hsm.client_keys import generate_client_key
from hsm.errors import HsmError, HsmUnavailable
from repository import NewCertificate, RevocationReason, Store
from repository.audit import Audit

log = logging.getLogger(__name__)
T = TypeVar("T")
# Who holds a token, for the audit trail, is asked again after this long.
IDENTITY_CACHE_SECONDS = 60.0
IDENTITY_CACHE_SIZE = 10000


@dataclass(frozen=True)
class _IssueJob:
    """One issue request in a batch, with who asked and the trace it belongs to."""

    request: IssueRequest
    subject: str
    audit: Audit
    trace: tracing.TraceContext | None = None


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
        auth: AuthClient | None = None,
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.store = store
        self.things = things
        self.crl = crl
        self.auth = auth or AuthClient(settings.auth_url, timeout=settings.auth_timeout,
                                       tls=settings.client_tls,
                                       ca_certs=settings.ca_certs or None)
        self._users: dict[bytes, tuple[float, str, str]] = {}
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="certs")
        self._issuer: Batcher[_IssueJob, CertificateView] = Batcher(
            self._issue_batch, self._executor, max_running=max(1, threads // 8))
        self._first_crl: asyncio.Task[None] | None = None
        observed.instrument(authority, store, crl)

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def close_identity(self) -> None:
        """Close the auth service's channel (the things client is closed by its owner)."""
        await self.auth.close()

    def issue_request(self, body: object) -> IssueRequest:
        """An issue or rotate body checked, completed with the configured defaults."""
        return issue_request(body, self.settings.hours_valid, self.settings.rsa_bits)

    # ---- use cases ----------------------------------------------------------------------

    async def issue(self, token: str, request: IssueRequest) -> CertificateView:
        self._check_ttl(request.ttl)
        await self._authorize(token, request.thing_id, "editor")
        self._require_signing()
        subject = await self._subject(request.thing_id)
        audit = _audit("issue")
        if request.key_type == "rsa":
            # Generating an RSA key takes tens of milliseconds: RSA requests would only make
            # each other wait in a batch, so each gets a thread of its own.
            view = await self._blocking(self._issue_and_save, request, subject, audit)
        else:
            view = await self._issue_grouped(request, subject, audit)
        context.note(serials=(view.serial,))
        return view

    async def view(self, token: str, serial: str) -> CertificateView:
        record = await self._get(serial)
        context.note(serials=(record.serial,))
        await self._authorize(token, record.thing_id, "viewer")
        return self._view(record)

    async def list_certificates(
        self, token: str, thing_id: str, query: ListQuery
    ) -> CertificatePage:
        await self._authorize(token, thing_id, "viewer")
        page = await self._read(self.store.list_by_thing_async, self.store.list_by_thing,
                                thing_id, **_page_arguments(query))
        return self._page_view(page)

    async def list_serials(self, token: str, thing_id: str, query: ListQuery
                           ) -> repository.SerialPage:
        """The page ``list_certificates`` gives, with only the serials' entries."""
        await self._authorize(token, thing_id, "viewer")
        return await self._read(self.store.list_serials_async, self.store.list_serials,
                                thing_id, **_page_arguments(query))

    async def renew(self, token: str, serial: str) -> CertificateView:
        record = await self._get(serial)
        context.note(serials=(record.serial,))
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
        request = IssueRequest(record.thing_id, record.private_key_type, record.key_bits, ttl,
                               device_key=same_device_key(record))
        return await self._replace_with(record.serial, request, "renew")

    async def rotate(self, token: str, serial: str, request: IssueRequest) -> CertificateView:
        self._check_ttl(request.ttl)
        record = await self._get(serial)
        context.note(serials=(record.serial,))
        await self._authorize(token, record.thing_id, "editor")
        if request.thing_id != record.thing_id:
            raise Forbidden(msg.AUTHORIZATION_FAILED)
        return await self._replace_with(record.serial, request, "rotate")

    async def revoke(self, token: str, serial: str) -> datetime:
        try:
            record = await self._get(serial)
        except NotFound:
            raise NotFound(msg.REVOKE_NOT_FOUND) from None
        context.note(serials=(record.serial,))
        await self._authorize(token, record.thing_id, "editor")
        self._require_signing()
        await self.crl_ready()
        return await self._blocking(self._revoke, record.serial, _audit("revoke"))

    async def download(self, key_type: KeyType, key: str, serial: str) -> CertificateView:
        try:
            thing_id = await self.things.identify_thing(key, key_type)
        except IdentityError as exc:
            unauthenticated = Unauthenticated(msg.AUTHENTICATION_FAILED)
            raise _identity_error(exc, denied=unauthenticated,
                                  unauthenticated=unauthenticated) from None
        context.note(actor=context.thing_actor(thing_id), thing_id=thing_id)
        record = await self._get(serial)
        context.note(serials=(record.serial,))
        if record.thing_id != thing_id:
            raise Forbidden(msg.AUTHORIZATION_FAILED)
        downloaded = await self._blocking(self._download, record.serial, thing_id,
                                          _audit("download"))
        return self._view(downloaded)

    # ---- device enrollment (EST, SPEC 12: authority/enrollment.py) ------------------------

    async def identify_thing(self, key_type: KeyType, key: str) -> str:
        """The thing of a thing key, noted as the request's actor; 401 when the key is
        rejected, 503 when the things service cannot say."""
        try:
            thing_id = await self.things.identify_thing(key, key_type)
        except IdentityError as exc:
            unauthenticated = Unauthenticated(msg.AUTHENTICATION_FAILED)
            raise _identity_error(exc, denied=unauthenticated,
                                  unauthenticated=unauthenticated) from None
        context.note(actor=context.thing_actor(thing_id), thing_id=thing_id)
        return thing_id

    async def active_certificate(self, serial: str) -> repository.Certificate:
        """The active record of ``serial``; NotFound when unknown or revoked."""
        record = await self._get(serial)
        context.note(thing_id=record.thing_id, serials=(record.serial,))
        return record

    async def issue_for_thing(self, request: IssueRequest, action: str) -> CertificateView:
        """Certify the device key of ``request`` for a thing that authenticated itself."""
        self._check_ttl(request.ttl)
        self._require_signing()
        subject = await self._subject(request.thing_id)
        view = await self._issue_grouped(request, subject, _audit(action))
        context.note(serials=(view.serial,))
        return view

    async def replace_for_thing(self, serial: str, request: IssueRequest, action: str
                                ) -> CertificateView:
        """Issue for ``request`` and revoke ``serial`` (superseded) in one transaction."""
        self._check_ttl(request.ttl)
        return await self._replace_with(serial, request, action)

    async def _replace_with(self, serial: str, request: IssueRequest, action: str
                            ) -> CertificateView:
        """Renew, rotate or re-enroll: the new certificate and the old one's revocation, and
        the CRL listing it, in one transaction."""
        self._require_signing()
        subject = await self._subject(request.thing_id)
        await self.crl_ready()
        view = await self._blocking(self._replace, serial, request, subject, _audit(action))
        context.note(serials=(view.serial,))
        return view

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
        return self._issue_and_save(request, request.thing_id,
                                    Audit(actor=context.OPERATOR, action="issue"))

    def revoke_as_operator(self, serial: str) -> datetime:
        """Revoke by serial and re-sign the CRL before returning (blocking)."""
        return self._revoke(serial, Audit(actor=context.OPERATOR, action="revoke"))

    def list_as_operator(self, thing_id: str, query: ListQuery) -> CertificatePage:
        """A page of the thing's active certificates (blocking)."""
        return self._list(thing_id, query)

    def publish_crl(self) -> PublishedCrl:
        """Sign the CRL now and write it to MF_CERTS_CRL_PATH (blocking)."""
        return self.crl.publish()

    # ---- blocking parts (worker threads) --------------------------------------------------

    def _list(self, thing_id: str, query: ListQuery) -> CertificatePage:
        return self._page_view(self.store.list_by_thing(thing_id, **_page_arguments(query)))

    def _issue_and_save(self, request: IssueRequest, subject: str, audit: Audit
                        ) -> CertificateView:
        issued = self._sign(request, subject)
        stored = self.store.save(new_record(request.thing_id, issued), audit=audit)
        return self._view(stored, issued.private_key_pem)

    def _issue_batch(self, jobs: list[_IssueJob]) -> list[CertificateView | Exception]:
        outcomes: list[CertificateView | Exception | None] = [None] * len(jobs)
        signed: list[tuple[int, IssuedCertificate]] = []
        unavailable: HsmUnavailable | None = None
        for index, job in enumerate(jobs):
            if unavailable is not None:
                # Each attempt would wait out MF_CERTS_HSM_TIMEOUT again, one after another.
                outcomes[index] = unavailable
                continue
            try:
                with tracing.attached(job.trace):  # its HSM span joins the request's trace
                    signed.append((index, self._sign(job.request, job.subject)))
            except HsmUnavailable as exc:
                outcomes[index] = unavailable = exc
            except HsmError as exc:
                outcomes[index] = exc
        records = [new_record(jobs[index].request.thing_id, issued) for index, issued in signed]
        audits: list[Audit | None] = [jobs[index].audit for index, _ in signed]
        first = jobs[signed[0][0]].trace if signed else None
        with tracing.attached(first):
            saved = self._save_all(records, audits)
        for (index, issued), stored in zip(signed, saved, strict=True):
            outcomes[index] = stored if isinstance(stored, Exception) else \
                self._view(stored, issued.private_key_pem)
        return [outcome for outcome in outcomes if outcome is not None]

    def _save_all(self, records: list[NewCertificate], audits: list[Audit | None] | None = None
                  ) -> list[repository.Certificate | Exception]:
        who = audits if audits is not None else [None] * len(records)
        try:
            return list(self.store.save_many(records, who))
        except repository.Conflict:
            # A serial collided (all but impossible with 159 random bits): store them one by
            # one, so that only the colliding certificate fails.
            return [self._save_one(record, audit)
                    for record, audit in zip(records, who, strict=True)]

    def _save_one(self, record: NewCertificate, audit: Audit | None
                  ) -> repository.Certificate | Exception:
        try:
            return self.store.save(record, audit=audit)
        except repository.Conflict as exc:
            return exc

    def _replace(self, old_serial: str, request: IssueRequest, subject: str, audit: Audit
                 ) -> CertificateView:
        issued = self._sign(request, subject)
        record = new_record(request.thing_id, issued)
        replacement = self.crl.revoking(lambda seal: self.store.replace(
            old_serial, record, reason=RevocationReason.SUPERSEDED, audit=audit, seal=seal))
        return self._view(replacement.certificate, issued.private_key_pem)

    def _download(self, serial: str, thing_id: str, audit: Audit) -> repository.Certificate:
        return self.store.mark_downloaded(serial, thing_id, audit=audit)

    def _revoke(self, serial: str, audit: Audit) -> datetime:
        try:
            revocation = self.crl.revoking(lambda seal: self.store.revoke(
                serial, reason=RevocationReason.UNSPECIFIED, audit=audit, seal=seal))
        except repository.NotFound:
            raise NotFound(msg.REVOKE_NOT_FOUND) from None
        return revocation.revoked_at

    def _sign(self, request: IssueRequest, subject: str) -> IssuedCertificate:
        key = request.device_key or generate_client_key(request.key_type, request.key_bits)
        return self.authority.issue(subject, key, request.ttl)

    # ---- helpers --------------------------------------------------------------------------

    async def _issue_grouped(self, request: IssueRequest, subject: str, audit: Audit
                             ) -> CertificateView:
        job = _IssueJob(request, subject, audit, tracing.current_context())
        return await _translated(self._issuer.submit(job))

    def _require_signing(self) -> None:
        """503 at once while the HSM is known to be down (hsm/connection.py): nothing is
        changed, and the caller does not wait out MF_CERTS_HSM_TIMEOUT."""
        if self.authority.connection.down:
            raise ServiceUnavailable(msg.SIGNING_UNAVAILABLE)

    def _check_ttl(self, ttl: timedelta) -> None:
        if datetime.now(UTC) + ttl > self.authority.not_after:
            raise BadRequest(msg.INVALID_TTL)

    async def _authorize(self, token: str, thing_id: str, action: Action) -> None:
        """The permission check, with the user identified for the audit trail at the same
        time (AuthService.Identify next to CanUserAccessThing: no added round trip) unless
        the token's holder is known from the last minute."""
        context.note(thing_id=thing_id)
        key = hashlib.sha256(token.encode()).digest()
        known = self._users.get(key)
        if known is not None and known[0] > time.monotonic():
            await self._can_access(token, thing_id, action)
            context.note(actor=known[1], email=known[2] or None)
            return
        identify = asyncio.ensure_future(self._identify(key, token))
        try:
            await self._can_access(token, thing_id, action)
        except BaseException:
            identify.cancel()
            raise
        actor, email = await identify
        context.note(actor=actor, email=email or None)

    async def _can_access(self, token: str, thing_id: str, action: Action) -> None:
        try:
            await self.things.can_access(token, thing_id, action)
        except IdentityError as exc:
            raise _identity_error(exc, denied=Forbidden(msg.AUTHORIZATION_FAILED)) from None

    async def _identify(self, key: bytes, token: str) -> tuple[str, str]:
        """``user:<id>`` and the email of the token's holder (``key``: the token's digest);
        ``user:unidentified`` (and a warning) when the auth service cannot say. Answers are
        kept a minute."""
        now = time.monotonic()
        try:
            user = await self.auth.identify_user(token)
        except IdentityError as exc:
            logging.getLogger("certs.audit").warning(
                "user not identified for the audit trail (%s); recorded as %s",
                exc, context.UNIDENTIFIED_USER)
            return context.UNIDENTIFIED_USER, ""
        if len(self._users) >= IDENTITY_CACHE_SIZE:
            self._users.clear()
        actor = context.user_actor(user.id)
        self._users[key] = (now + IDENTITY_CACHE_SECONDS, actor, user.email)
        return actor, user.email

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
        # The thread runs in a copy of this context, so its spans are the request's children.
        work = functools.partial(contextvars.copy_context().run, function, *args)
        return await _translated(loop.run_in_executor(self._executor, work))

    async def _get(self, serial: str) -> repository.Certificate:
        """The active certificate with this serial (without its key)."""
        return await self._read(self.store.get_async, self.store.get, serial)

    async def _read(self, on_loop: Callable[..., Awaitable[T]], in_thread: Callable[..., T],
                    *args: object, **kwargs: Any) -> T:
        """A store read: awaited on the loop where the store can (PostgreSQL), else in a
        worker thread; its failures translated as everywhere (``_translated``)."""
        if not self.store.reads_on_loop:
            return await self._blocking(functools.partial(in_thread, **kwargs), *args)
        return await _translated(on_loop(*args, **kwargs))

    def _page_view(self, page: repository.CertificatePage) -> CertificatePage:
        return CertificatePage(page.total, page.offset, page.limit,
                               [self._view(record) for record in page.items])

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


def _audit(action: str) -> Audit:
    """Who is making the current request's change (the operator outside a request)."""
    current = context.current()
    if current is None:
        return Audit(actor=context.OPERATOR, action=action)
    return Audit(actor=current.actor or context.UNIDENTIFIED_USER, action=action,
                 email=current.email, client=current.client, request_id=current.request_id)


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


def _page_arguments(query: ListQuery) -> repository.PageFilters:
    """The store's page arguments for a list query."""
    return {"offset": query.offset, "limit": query.limit, "serial": query.serial,
            "expires_from": query.expires_from, "expires_to": query.expires_to}


async def _translated(work: Awaitable[T]) -> T:
    """``work`` awaited, a failure of it raised as its API error (``_service_error``)."""
    try:
        return await work
    except Exception as exc:  # noqa: BLE001 - translated, or re-raised as it is
        raise _service_error(exc) from None


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


