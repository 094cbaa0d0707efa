"""The key sealer the store needs: authenticated encryption bound to associated data."""

from typing import Protocol


class KeySealer(Protocol):
    """Encrypts private keys at rest; the real one is an AES-GCM key inside the HSM.

    The store passes the certificate's serial (normalised, UTF-8) as ``aad``, so a sealed key
    copied to another row does not open.
    """

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, sealed: bytes, aad: bytes) -> bytes: ...
