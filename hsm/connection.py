"""One logged-in connection to a PKCS#11 token: a bounded pool of sessions that heals itself.

Login belongs to the process, not to a session, and closing the session that logged in logs
every session out. So one "anchor" session logs in and stays open for the life of the process;
the pooled sessions are opened without a PIN and share its login. Any session that fails is
dropped; if the failure was the token's state (sessions closed, logged out, module restarted),
the connection repairs it once for everybody and bumps a generation so that every pooled session
and cached key handle from before the repair is replaced.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pkcs11
from pkcs11 import ObjectClass
from pkcs11 import exceptions as p11

from hsm.errors import HsmUnavailable, KeyNotFound, PinRejected, TokenNotFound
from hsm.library import CKR_OK, CKR_USER_ALREADY_LOGGED_IN, Library

log = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that describe the request, not the token's state: retrying them cannot help.
CALLER_ERRORS: tuple[type[p11.PKCS11Error], ...] = (
    p11.ArgumentsBad, p11.DataInvalid, p11.DataLenRange, p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange, p11.MechanismInvalid, p11.MechanismParamInvalid,
    p11.KeyTypeInconsistent, p11.SignatureInvalid, p11.SignatureLenRange,
    p11.TemplateIncomplete, p11.TemplateInconsistent, p11.AttributeValueInvalid,
    p11.AttributeTypeInvalid, p11.FunctionNotSupported, p11.KeySizeRange,
    p11.DomainParamsInvalid, p11.AttributeSensitive, p11.KeyUnextractable,
)
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


class Keys:
    """A pooled session and the key handles found in it (handles belong to their session)."""

    def __init__(self, session: pkcs11.Session, generation: int) -> None:
        self.session = session
        self.generation = generation
        self._cache: dict[tuple[str, ObjectClass], Any] = {}

    def _get(self, label: str, object_class: ObjectClass) -> Any:
        cached = self._cache.get((label, object_class))
        if cached is None:
            cached = self.session.get_key(label=label, object_class=object_class)
            self._cache[(label, object_class)] = cached
        return cached

    def private_key(self, label: str) -> Any:
        """The private key labelled ``label``, looked up once per session."""
        return self._get(label, ObjectClass.PRIVATE_KEY)

    def secret_key(self, label: str) -> Any:
        """The secret key labelled ``label``, looked up once per session."""
        return self._get(label, ObjectClass.SECRET_KEY)


class HsmConnection:
    """Logged-in access to one token, used by many threads at once."""

    def __init__(self, config: HsmConfig) -> None:
        self.config = config
        self.library = Library.load(config.module_path)
        self._lock = threading.Condition()
        self._idle: list[Keys] = []
        self._open_count = 0
        self._generation = 0
        self._failure: str | None = None
        self._closed = False
        self._token = self._find_token()
        self._anchor = self._login()

    # ---- public -------------------------------------------------------------------------

    def run(self, operation: Callable[[Keys], T], wait_seconds: float | None = None) -> T:
        """Run ``operation`` on a pooled session, repairing and retrying until the deadline.

        Raises HsmUnavailable when no healthy session could be had in time.
        """
        deadline = time.monotonic() + (wait_seconds or self.config.wait_seconds)
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            keys = self._acquire(deadline)
            try:
                result = operation(keys)
            except CALLER_ERRORS:
                self._release(keys)
                raise
            except (p11.PKCS11Error, KeyNotFound) as exc:
                last_error = exc
                self._discard(keys)
                if isinstance(exc, KeyNotFound | p11.NoSuchKey) and self._anchor_logged_in():
                    raise KeyNotFound("no such key in the token") from exc
                log.warning("HSM operation failed (%s); repairing the session", type(exc).__name__)
                self._repair(keys.generation)
                time.sleep(self.config.retry_pause_seconds)
                continue
            self._release(keys)
            return result
        raise HsmUnavailable() from last_error

    @contextmanager
    def admin_session(self) -> Iterator[pkcs11.Session]:
        """A read-write session for creating and reading token objects (not pooled)."""
        session = self._token.open(rw=True)
        try:
            yield session
        finally:
            self._close_session(session)

    @property
    def failure(self) -> str | None:
        """Why the last repair failed, or None while the token is usable."""
        return self._failure

    def close(self) -> None:
        """Close pooled sessions; the anchor stays (closing it would log out the process)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for keys in idle:
            self._close_session(keys.session)

    # ---- pool ---------------------------------------------------------------------------

    def _acquire(self, deadline: float) -> Keys:
        with self._lock:
            while True:
                if self._closed:
                    raise HsmUnavailable("signing service closed")
                while self._idle:
                    keys = self._idle.pop()
                    if keys.generation == self._generation:
                        return keys
                    self._open_count -= 1
                    self._close_session(keys.session)
                if self._open_count < self.config.pool_size:
                    self._open_count += 1
                    generation = self._generation
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._lock.wait(remaining):
                    raise HsmUnavailable("signing service unavailable: no free HSM session")
        try:
            return Keys(self._token.open(), generation)
        except p11.PKCS11Error as exc:
            with self._lock:
                self._open_count -= 1
                self._lock.notify()
            self._repair(generation)
            if time.monotonic() >= deadline:
                raise HsmUnavailable() from exc
            return self._acquire(deadline)

    def _release(self, keys: Keys) -> None:
        with self._lock:
            self._idle.append(keys)
            self._lock.notify()

    def _discard(self, keys: Keys) -> None:
        self._close_session(keys.session)
        with self._lock:
            self._open_count -= 1
            self._lock.notify()

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

    def _login(self) -> pkcs11.Session:
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
        return bool(self.library.session_logged_in(self._anchor_handle))

    def _repair(self, failed_generation: int) -> None:
        """Bring the token back to a logged-in state once per failure generation."""
        with self._lock:
            if failed_generation != self._generation:
                return
            self._generation += 1
            try:
                self._restore_login()
                self._failure = None
            except (p11.PKCS11Error, TokenNotFound, PinRejected, OSError) as exc:
                self._failure = f"{type(exc).__name__}: {exc}"
                log.error("HSM unusable: %s", self._failure)

    def _restore_login(self) -> None:
        state = self.library.session_logged_in(self._anchor_handle)
        if state is True:
            return
        if state is False:
            rv = self.library.login(self._anchor_handle, self.config.pin)
            if rv in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
                return
        try:
            self._anchor = self._login()
        except (p11.NoSuchToken, p11.TokenNotPresent, p11.SlotIDInvalid, p11.GeneralError,
                p11.DeviceRemoved, p11.DeviceError, p11.SessionCount):
            self.library.reinitialize()
            self._token = self._find_token()
            self._anchor = self._login()
