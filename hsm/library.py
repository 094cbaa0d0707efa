"""Loading a PKCS#11 module so that several threads may call it at once.

python-pkcs11 calls ``C_Initialize(NULL)``, which tells the module that the application does
not call it from several threads; SoftHSM2 then disables its own locking while python-pkcs11
still releases the GIL around every call, and concurrent signers crash the process. After
python-pkcs11 has loaded the module we finalize it and initialise it again with
``CKF_OS_LOCKING_OK`` through ctypes on the same (already loaded) shared object.
"""

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pkcs11
import pkcs11.exceptions

from hsm.errors import HsmUnavailable, HsmUnfit

CKR_OK = 0x0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKF_OS_LOCKING_OK = 0x2
CKU_USER = 1
CKR_USER_ALREADY_LOGGED_IN = 0x100


class _InitializeArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):
    _fields_ = [
        ("slotID", ctypes.c_ulong),
        ("state", ctypes.c_ulong),
        ("flags", ctypes.c_ulong),
        ("ulDeviceError", ctypes.c_ulong),
    ]


CKS_RO_USER_FUNCTIONS = 1
CKS_RW_USER_FUNCTIONS = 3


class CallGuard:
    """Many threads may be inside the module at once, or one thread re-initialising it alone.

    ``C_Finalize`` while another thread is inside a call frees what that call uses.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            while self._exclusive or self._exclusive_waiting:
                self._condition.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._condition:
                self._inside -= 1
                if not self._inside:
                    self._condition.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._exclusive_waiting += 1
            while self._exclusive or self._inside:
                self._condition.wait()
            self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


class Library:
    """One PKCS#11 module, loaded once per process, initialised for OS locking.

    ``epoch`` counts initialisations: session handles are numbered afresh after each one, so a
    handle from an older epoch must never be passed to the module again.
    """

    _loaded: dict[str, "Library"] = {}
    _load_lock = threading.Lock()

    def __init__(self, module_path: str) -> None:
        self.module_path = module_path
        self.guard = CallGuard()
        self.epoch = 0
        self.broken: str | None = None
        try:
            self.pkcs11 = pkcs11.lib(module_path)
        except pkcs11.exceptions.PKCS11Error as exc:
            # SoftHSM2 fails here when its token directory is missing or unreadable.
            raise HsmUnavailable(f"the PKCS#11 module {module_path} did not initialise "
                                 f"({type(exc).__name__})") from exc
        self.raw = ctypes.CDLL(module_path)
        self.raw.C_Login.argtypes = [
            ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong,
        ]
        self.raw.C_GetSessionInfo.argtypes = [ctypes.c_ulong, ctypes.POINTER(_SessionInfo)]
        self.raw.C_Logout.argtypes = [ctypes.c_ulong]
        self.raw.C_CloseAllSessions.argtypes = [ctypes.c_ulong]
        self.reinitialize()

    @classmethod
    def load(cls, module_path: str) -> "Library":
        """The process-wide instance for ``module_path`` (a module may be loaded only once)."""
        with cls._load_lock:
            library = cls._loaded.get(module_path)
            if library is None:
                library = cls(module_path)
                cls._loaded[module_path] = library
            return library

    def reinitialize(self) -> None:
        """Finalize and initialise the module again with OS locking; drops every session.

        When finalizing or initialising fails the module is left unusable, ``broken`` says why
        and HsmUnfit is raised, now and on every later call: what a module does after a failed
        ``C_Initialize`` is undefined, so only a new process may use it again.
        """
        with self.guard.exclusive():
            if self.broken is not None:
                raise HsmUnfit(self.broken)
            rv = self.raw.C_Finalize(None)
            if rv not in (CKR_OK, CKR_CRYPTOKI_NOT_INITIALIZED):
                self.broken = f"the PKCS#11 module failed to finalize (0x{rv:x})"
                raise HsmUnfit(self.broken)
            self.epoch += 1
            args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
            rv = self.raw.C_Initialize(ctypes.byref(args))
            if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
                self.broken = f"the PKCS#11 module failed to initialise again (0x{rv:x})"
                raise HsmUnfit(self.broken)

    def session_logged_in(self, session_handle: int) -> bool | None:
        """True/False for a live session's login state; None when the handle is no longer valid."""
        info = _SessionInfo()
        if self.raw.C_GetSessionInfo(session_handle, ctypes.byref(info)) != CKR_OK:
            return None
        return info.state in (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)

    def login(self, session_handle: int, pin: str) -> int:
        """C_Login as the user on an existing session; returns the PKCS#11 return value."""
        pin_bytes = pin.encode()
        rv: int = self.raw.C_Login(session_handle, CKU_USER, pin_bytes, len(pin_bytes))
        return rv
