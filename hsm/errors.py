"""Typed errors of the signing core; none of them carries a PIN or key material."""


class HsmError(Exception):
    """Base of every error raised by the signing core."""


class HsmUnavailable(HsmError):
    """The HSM could not be used within the time allowed: signing is unavailable."""

    def __init__(self, reason: str = "signing service unavailable") -> None:
        super().__init__(reason)


class HsmUnfit(HsmUnavailable):
    """The PKCS#11 module can no longer be used by this process (it failed to initialise again,
    as SoftHSM2 does once its token directory is removed): only a new process can sign."""


class TokenNotFound(HsmError):
    """No token with the configured label is present in the PKCS#11 module."""


class PinRejected(HsmError):
    """The token refused the configured user PIN."""


class KeyNotFound(HsmError):
    """The token holds no key with the configured label."""


class CaMismatch(HsmError):
    """The configured CA certificate does not belong to the key held in the token."""


class SealError(HsmError):
    """A sealed private key could not be opened (wrong serial, tampered or foreign data)."""
