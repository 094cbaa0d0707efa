"""One logged-in connection to a PKCS#11 token: a bounded, fair pool of sessions that heals.

Login belongs to the process, not to a session, and closing the session that logged in logs
every session out. So one "anchor" session logs in and stays open for the life of the process;
the pooled sessions are opened without a PIN and share its login. Any session that fails is
dropped, and the failure is classified (hsm/faults.py): for a session or token fault the
connection repairs the token's state once for everybody (log in again; re-initialise the module
and find the token again when that is not enough) and bumps a generation so that every pooled
session and cached key handle from before the repair is replaced. Waiting callers are served in
order.

While a repair keeps failing the HSM is "down": callers get HsmUnavailable at once instead of
waiting out their deadline, and one of them tries the repair again at most every
``repair_interval_seconds``. When the module itself can no longer be used (a failed
``C_Initialize``), or the HSM has been down for ``unfit_after_seconds``, the connection is
``unrecoverable``: every call fails at once and only a new process can sign again.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pkcs11
from pkcs11 import ObjectClass
from pkcs11 import exceptions as p11

from hsm.capabilities import Capabilities, query
from hsm.errors import HsmUnavailable, HsmUnfit, KeyNotFound, PinRejected, TokenNotFound
from hsm.faults import CALLER_ERRORS, Fault, classify, describe
from hsm.library import CKR_OK, CKR_USER_ALREADY_LOGGED_IN, Library

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["CALLER_ERRORS", "HsmConfig", "HsmConnection", "Keys", "MissingKey", "OfflineConnection"]
TOKEN_FIND_ATTEMPTS = 5


@dataclass(frozen=True)
class HsmConfig:
    """Where the token is and how to use it. The PIN never appears in repr()."""

    module_path: str
    pin: str = field(repr=False)
    token_label: str = "certs"
    pool_size: int = 4
    wait_seconds: float = 5.0
    retry_pause_seconds: float = 0.05
    repair_interval_seconds: float = 1.0
    unfit_after_seconds: float = 30.0


class MissingKey(KeyNotFound):
    """A key label was not found in a session (the token may be logged out, or lost it)."""

    def __init__(self, label: str) -> None:
        super().__init__(f"no key labelled {label!r}")
        self.label = label


class Keys:
    """A pooled session and the key handles found in it (handles belong to their session)."""

    def __init__(self, session: pkcs11.Session, generation: int, epoch: int,
                 seen_labels: set[str]) -> None:
        self.session = session
        self.generation = generation
        self.epoch = epoch
        self._seen_labels = seen_labels
        self._cache: dict[tuple[str, ObjectClass], Any] = {}

    def _get(self, label: str, object_class: ObjectClass) -> Any:
        cached = self._cache.get((label, object_class))
        if cached is None:
            try:
                cached = self.session.get_key(label=label, object_class=object_class)
            except p11.NoSuchKey:
                raise MissingKey(label) from None
            self._cache[(label, object_class)] = cached
            self._seen_labels.add(label)
        return cached

    def private_key(self, label: str) -> Any:
        """The private key labelled ``label``, looked up once per session."""
        return self._get(label, ObjectClass.PRIVATE_KEY)

    def secret_key(self, label: str) -> Any:
        """The secret key labelled ``label``, looked up once per session."""
        return self._get(label, ObjectClass.SECRET_KEY)


class _Waiter:
    """A caller waiting for a session: it is handed one, or the right to open one."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.keys: Keys | None = None


class HsmConnection:
    """Logged-in access to one token, used by many threads at once."""

    def __init__(self, config: HsmConfig) -> None:
        self.config = config
        self.library = Library.load(config.module_path)
        self._lock = threading.RLock()
        self._idle: list[Keys] = []
        self._waiters: deque[_Waiter] = deque()
        self._open_count = 0
        self._generation = 0
        self._seen_labels: set[str] = set()
        self._failure: str | None = None
        self._down_since: float | None = None
        self._next_repair = 0.0
        self._unfit: str | None = None
        self._repairing = threading.Lock()
        self._closed = False
        self._capabilities: Capabilities | None = None
        self._anchor = self._first_login()
        self._anchor_epoch = self.library.epoch

    # ---- public -------------------------------------------------------------------------

    def run(self, operation: Callable[[Keys], T], wait_seconds: float | None = None) -> T:
        """Run ``operation`` on a pooled session, repairing and retrying until the deadline.

        Raises HsmUnavailable when no healthy session could be had in time (at once while the
        HSM is known to be down), KeyNotFound when the token is usable but has no such key.
        """
        wait = self.config.wait_seconds if wait_seconds is None else wait_seconds
        deadline = time.monotonic() + wait
        last_error: Exception | None = None
        missing_tries = 0
        vanished = 0
        while True:
            self._fail_fast()
            if time.monotonic() >= deadline:
                raise HsmUnavailable() from last_error
            keys = self._acquire(deadline)
            try:
                with self.library.guard.shared():
                    result = operation(keys)
            except MissingKey as exc:
                last_error = exc
                self._discard(keys)
                if exc.label in self._seen_labels:
                    # Logged out, the token shows no private objects: log in again. Logged
                    # in with no repair since this session was opened, the objects went away
                    # (SoftHSM2 once its token directory is gone, a module restarted under
                    # us): find the token afresh, and if that does not bring the key back,
                    # the HSM is down.
                    logged_in = keys.generation == self._generation and \
                        self._anchor_logged_in()
                    if logged_in:
                        vanished += 1
                        if vanished > 1:
                            self._mark_down(f"key {exc.label!r} vanished from the token")
                            raise HsmUnavailable() from None
                    self._repair(keys.generation, Fault.TOKEN, reinitialize=logged_in)
                else:
                    missing_tries += 1
                    if missing_tries >= 2 and self._anchor_logged_in():
                        raise KeyNotFound(
                            f"no key labelled {exc.label!r} in token {self.config.token_label!r}"
                        ) from None
                    self._repair(keys.generation, Fault.TOKEN)
            except p11.PKCS11Error as exc:
                fault = classify(exc)
                if fault is Fault.CALLER:
                    self._release(keys)
                    raise
                last_error = exc
                self._discard(keys)
                log.warning("HSM operation failed (%s, a %s fault); repairing", describe(exc),
                            fault.value)
                self._repair(keys.generation, fault)
            except BaseException:
                self._release(keys)
                raise
            else:
                self._release(keys)
                if self._failure is not None and self.unrecoverable is None:
                    self._failure = None
                    self._down_since = None
                return result
            time.sleep(self.config.retry_pause_seconds)

    @contextmanager
    def admin_session(self) -> Iterator[pkcs11.Session]:
        """A read-write session for creating and reading token objects (not pooled)."""
        with self.library.guard.shared():
            session = self._token.open(rw=True)
            try:
                yield session
            finally:
                self._close_session(session)

    @property
    def capabilities(self) -> Capabilities:
        """The token's mechanisms, asked once (a module's mechanism list does not change)."""
        if self._capabilities is None:
            with self.library.guard.shared():
                self._capabilities = query(self._token, self.config.module_path)
        return self._capabilities

    @property
    def failure(self) -> str | None:
        """Why the token is not usable right now, or None while it is."""
        return self.unrecoverable or self._failure

    @property
    def unrecoverable(self) -> str | None:
        """Why this process can never sign again (only a new process can), or None."""
        return self.library.broken or self._unfit

    @property
    def down(self) -> bool:
        """Whether the HSM is known to be unusable: calls fail at once."""
        return self._down_since is not None or self.unrecoverable is not None

    def close(self) -> None:
        """Close pooled sessions; the anchor stays (closing it would log out the process)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            for waiter in self._waiters:
                waiter.event.set()
        for keys in idle:
            self._close_keys(keys)

    # ---- pool ---------------------------------------------------------------------------

    def _acquire(self, deadline: float) -> Keys:
        while True:
            waiter: _Waiter | None = None
            with self._lock:
                if self._closed:
                    raise HsmUnavailable("signing service closed")
                if self._idle:
                    keys = self._idle.pop()
                    if self._fresh(keys):
                        return keys
                    stale: Keys | None = keys
                elif self._open_count < self.config.pool_size and not self._waiters:
                    self._open_count += 1
                    stale = None
                else:
                    waiter = _Waiter()
                    self._waiters.append(waiter)
                    stale = None
            if waiter is not None:
                if not waiter.event.wait(max(0.0, deadline - time.monotonic())):
                    with self._lock:
                        if not waiter.event.is_set():
                            self._waiters.remove(waiter)
                            raise HsmUnavailable(
                                "signing service unavailable: no free HSM session")
                if self._closed:
                    raise HsmUnavailable("signing service closed")
                if waiter.keys is not None and self._fresh(waiter.keys):
                    return waiter.keys
                stale = waiter.keys
            if stale is not None:
                self._close_keys(stale)
            opened = self._open(deadline)
            if opened is not None:
                return opened

    def _open(self, deadline: float) -> Keys | None:
        """Open a session in a slot this thread holds; None (slot given back) if it failed."""
        generation = self._generation
        try:
            with self.library.guard.shared():
                session = self._token.open()
            return Keys(session, generation, self.library.epoch, self._seen_labels)
        except p11.PKCS11Error as exc:
            self._give_back_slot()
            self._repair(generation, classify(exc))
            if time.monotonic() >= deadline or self.down:
                raise HsmUnavailable() from exc
            time.sleep(self.config.retry_pause_seconds)
            return None

    def _fresh(self, keys: Keys) -> bool:
        return keys.generation == self._generation and keys.epoch == self.library.epoch

    def _release(self, keys: Keys) -> None:
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.keys = keys
                waiter.event.set()
            else:
                self._idle.append(keys)

    def _discard(self, keys: Keys) -> None:
        self._close_keys(keys)
        self._give_back_slot()

    def _give_back_slot(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().event.set()  # the waiter opens a session in this slot
            else:
                self._open_count -= 1

    def _close_keys(self, keys: Keys) -> None:
        if keys.epoch == self.library.epoch:
            with self.library.guard.shared():
                self._close_session(keys.session)

    @staticmethod
    def _close_session(session: pkcs11.Session) -> None:
        try:
            session.close()
        except p11.PKCS11Error as exc:
            log.debug("closing a dead HSM session: %s", type(exc).__name__)

    # ---- login and repair ---------------------------------------------------------------

    def _find_token(self) -> pkcs11.Token:
        """The token by label; a module that misses a token being rewritten gets re-initialised."""
        for attempt in range(TOKEN_FIND_ATTEMPTS):
            try:
                with self.library.guard.shared():
                    return self.library.pkcs11.get_token(token_label=self.config.token_label)
            except (p11.NoSuchToken, p11.GeneralError) as exc:
                if attempt == TOKEN_FIND_ATTEMPTS - 1:
                    raise TokenNotFound(
                        f"no PKCS#11 token labelled {self.config.token_label!r} "
                        f"in {self.config.module_path}"
                    ) from exc
                time.sleep(0.05 * (attempt + 1))
                self.library.reinitialize()
        raise AssertionError("unreachable")

    def _first_login(self) -> pkcs11.Session:
        """Find the token and log in, at start. SoftHSM2 rewrites its token file on every
        login, so a process that logs in at that moment (workers start together) can get
        GeneralError: the module is re-initialised and the login tried again."""
        for attempt in range(TOKEN_FIND_ATTEMPTS):
            self._token = self._find_token()
            try:
                return self._login()
            except p11.GeneralError:
                if attempt == TOKEN_FIND_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
                self.library.reinitialize()
        raise AssertionError("unreachable")

    def _login(self) -> pkcs11.Session:
        try:
            with self.library.guard.shared():
                try:
                    return self._token.open(user_pin=self.config.pin)
                except p11.UserAlreadyLoggedIn:
                    return self._token.open()
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as exc:
            raise PinRejected(
                f"the token {self.config.token_label!r} rejected the configured user PIN"
            ) from exc
        except p11.PinLocked as exc:
            raise PinRejected(
                f"the user PIN of token {self.config.token_label!r} is locked"
            ) from exc

    @property
    def _anchor_handle(self) -> int:
        handle: int = cast(Any, self._anchor).handle
        return handle

    def _anchor_logged_in(self) -> bool:
        with self._lock:
            if self._anchor_epoch != self.library.epoch:
                return False
            with self.library.guard.shared():
                return bool(self.library.session_logged_in(self._anchor_handle))

    def _fail_fast(self) -> None:
        """Raise at once while the HSM is known to be down; now and then let one caller try
        the repair again first."""
        reason = self.unrecoverable
        if reason is not None:
            raise HsmUnfit(reason)
        since = self._down_since
        if since is None:
            return
        now = time.monotonic()
        if now - since >= self.config.unfit_after_seconds:
            self._declare_unfit(f"the HSM has been unusable for "
                                f"{self.config.unfit_after_seconds:.0f} s ({self._failure})")
            raise HsmUnfit(self._unfit or "")
        if now < self._next_repair or not self._repairing.acquire(blocking=False):
            raise HsmUnavailable()
        try:
            self._next_repair = now + self.config.repair_interval_seconds
            self._repair(self._generation, Fault.TOKEN, reinitialize=True)
        finally:
            self._repairing.release()
        if self.down:
            raise HsmUnavailable()

    def _mark_down(self, reason: str) -> None:
        self._failure = reason
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("HSM unusable: %s", reason)
        self._next_repair = time.monotonic() + self.config.repair_interval_seconds

    def _declare_unfit(self, reason: str) -> None:
        if self._unfit is None:
            self._unfit = reason
            log.error("HSM unusable in this process: %s", reason)

    def _repair(self, failed_generation: int, fault: Fault, *, reinitialize: bool = False
                ) -> None:
        """Bring the token back to a logged-in state once per failure generation."""
        with self._lock:
            if failed_generation != self._generation:
                return
            self._generation += 1
            try:
                self._restore_login(reinitialize or fault is Fault.LIBRARY)
            except HsmUnfit as exc:
                self._declare_unfit(str(exc))
                self._failure = str(exc)
            except PinRejected as exc:
                # Trying the PIN again and again would lock it: leave it to a new process.
                self._declare_unfit(str(exc))
            except Exception as exc:  # noqa: BLE001 - recorded for health(), callers get 503
                self._mark_down(f"{describe(exc)}: {exc}" if str(exc) else describe(exc))
            else:
                self._failure = None
                self._down_since = None

    def _restore_login(self, reinitialize: bool) -> None:
        if self._anchor_epoch == self.library.epoch and not reinitialize:
            with self.library.guard.shared():
                state = self.library.session_logged_in(self._anchor_handle)
                if state is True:
                    return
                if state is False:
                    rv = self.library.login(self._anchor_handle, self.config.pin)
                    if rv in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
                        return
        if not reinitialize:
            try:
                epoch = self.library.epoch
                self._anchor = self._login()
                self._anchor_epoch = epoch
                return
            except (p11.NoSuchToken, p11.TokenNotPresent, p11.SlotIDInvalid, p11.GeneralError,
                    p11.DeviceRemoved, p11.DeviceError, p11.SessionCount,
                    p11.TokenNotRecognised):
                pass
        self.library.reinitialize()
        self._token = self._find_token()
        epoch = self.library.epoch
        self._anchor = self._login()
        self._anchor_epoch = epoch


class OfflineConnection(HsmConnection):
    """Stands in for a connection that could not be opened, so that a process can serve what
    needs no HSM: every call fails at once with HsmUnavailable and ``failure`` says why."""

    def __init__(self, config: HsmConfig, reason: str) -> None:  # nothing to load or log in
        self.config = config
        self._reason = reason

    def run(self, operation: Callable[[Keys], T], wait_seconds: float | None = None) -> T:
        raise HsmUnavailable(self._reason)

    @contextmanager
    def admin_session(self) -> Iterator[pkcs11.Session]:
        raise HsmUnavailable(self._reason)
        yield  # pragma: no cover - a generator for contextmanager

    @property
    def capabilities(self) -> Capabilities:
        raise HsmUnavailable(self._reason)

    @property
    def failure(self) -> str | None:
        return self._reason

    @property
    def unrecoverable(self) -> str | None:
        return None  # never opened: a new process may well open it

    @property
    def down(self) -> bool:
        return True

    def close(self) -> None:
        pass
