"""What a failed PKCS#11 call says about the HSM, and so what repairs it.

Every error a call can raise falls in one class:

- ``CALLER``: the request was wrong (bad data, unsupported mechanism): raised as it is; the
  session is fine and goes back to the pool.
- ``SESSION``: this session, or a handle in it, is no longer valid (an HSM that drops idle
  sessions, sessions closed under us): the session is dropped and another one opened; the
  process's login is checked on the way.
- ``TOKEN``: the login or the token went away (logged out, token removed and back, a network
  HSM restarted): log in again, re-initialising the module and finding the token again when the
  login cannot simply be restored, and look every key handle up again.
- ``LIBRARY``: the module itself can no longer be used by this process (``C_Initialize`` or
  ``C_Finalize`` failed): nothing in-process helps; the process reports itself unfit and is
  replaced by a new one.

Unknown errors count as ``SESSION``: retried on another session until the caller's deadline.
"""

from enum import Enum

from pkcs11 import exceptions as p11


class Fault(Enum):
    CALLER = "caller"
    SESSION = "session"
    TOKEN = "token"
    LIBRARY = "library"


# The PKCS#11 return value behind each python-pkcs11 exception, for the operator's table.
CODES: dict[type[p11.PKCS11Error], str] = {
    p11.SessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID",
    p11.SessionClosed: "CKR_SESSION_CLOSED",
    p11.SessionCount: "CKR_SESSION_COUNT",
    p11.ObjectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID",
    p11.KeyHandleInvalid: "CKR_KEY_HANDLE_INVALID",
    p11.OperationActive: "CKR_OPERATION_ACTIVE",
    p11.OperationNotInitialized: "CKR_OPERATION_NOT_INITIALIZED",
    p11.FunctionFailed: "CKR_FUNCTION_FAILED",
    p11.FunctionCancelled: "CKR_FUNCTION_CANCELED",
    p11.DeviceMemory: "CKR_DEVICE_MEMORY",
    p11.HostMemory: "CKR_HOST_MEMORY",
    p11.UserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN",
    p11.DeviceRemoved: "CKR_DEVICE_REMOVED",
    p11.DeviceError: "CKR_DEVICE_ERROR",
    p11.TokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
    p11.TokenNotRecognised: "CKR_TOKEN_NOT_RECOGNIZED",
    p11.SlotIDInvalid: "CKR_SLOT_ID_INVALID",
    p11.GeneralError: "CKR_GENERAL_ERROR",
    p11.NoSuchToken: "(no token with the label)",
    p11.NoSuchKey: "(no key with the label)",
}

_SESSION: tuple[type[p11.PKCS11Error], ...] = (
    p11.SessionHandleInvalid, p11.SessionClosed, p11.SessionCount, p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid, p11.OperationActive, p11.OperationNotInitialized, p11.FunctionFailed,
    p11.FunctionCancelled, p11.DeviceMemory, p11.HostMemory,
)
_TOKEN: tuple[type[p11.PKCS11Error], ...] = (
    p11.UserNotLoggedIn, p11.DeviceRemoved, p11.DeviceError, p11.TokenNotPresent,
    p11.TokenNotRecognised, p11.SlotIDInvalid, p11.GeneralError, p11.NoSuchToken,
)
# Errors that describe the request, not the token's state: retrying them cannot help.
CALLER_ERRORS: tuple[type[p11.PKCS11Error], ...] = (
    p11.ArgumentsBad, p11.DataInvalid, p11.DataLenRange, p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange, p11.MechanismInvalid, p11.MechanismParamInvalid,
    p11.KeyTypeInconsistent, p11.SignatureInvalid, p11.SignatureLenRange,
    p11.TemplateIncomplete, p11.TemplateInconsistent, p11.AttributeValueInvalid,
    p11.AttributeTypeInvalid, p11.FunctionNotSupported, p11.KeySizeRange,
    p11.DomainParamsInvalid, p11.AttributeSensitive, p11.KeyUnextractable,
    p11.MultipleObjectsReturned,
)
# python-pkcs11 raises a plain PKCS11Error for CKR_CRYPTOKI_NOT_INITIALIZED: the module was
# finalized under us, which a re-initialisation repairs (or shows to be hopeless).
_NOT_INITIALIZED = "not initialized"


def classify(exc: BaseException) -> Fault:
    """The class of a failed PKCS#11 call (see the module's docstring)."""
    if isinstance(exc, CALLER_ERRORS):
        return Fault.CALLER
    if isinstance(exc, _TOKEN):
        return Fault.TOKEN
    if isinstance(exc, _SESSION):
        return Fault.SESSION
    if type(exc) is p11.PKCS11Error and _NOT_INITIALIZED in str(exc):
        return Fault.TOKEN
    return Fault.SESSION


def describe(exc: BaseException) -> str:
    """A short name for a failure in logs and /health: the CKR_ code where known."""
    for kind, code in CODES.items():
        if isinstance(exc, kind):
            return code
    return type(exc).__name__
