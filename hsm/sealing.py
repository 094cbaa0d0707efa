"""Encryption of client private keys at rest with an AES-256 key that never leaves the token.

A sealed value is ``0x01 || 12-byte nonce || AES-GCM ciphertext and tag``; the associated data
(the certificate's serial) binds it to its row, so a sealed key copied to another row won't open.
"""

import os
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from hsm.connection import HsmConnection, Keys
from hsm.errors import SealError

_FORMAT_V1 = b"\x01"
_NONCE_SIZE = 12


def ensure_sealing_key(connection: HsmConnection, label: str) -> bool:
    """Create the AES sealing key in the token unless it exists; True when it was created."""
    with connection.admin_session() as session:
        if list(session.get_objects({Attribute.LABEL: label,
                                     Attribute.CLASS: ObjectClass.SECRET_KEY})):
            return False
        session.generate_key(
            KeyType.AES, 256, label=label, store=True,
            template={
                Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.SIGN: False,
                Attribute.VERIFY: False, Attribute.DERIVE: False,
            },
        )
        return True


@dataclass(frozen=True)
class HsmSealer:
    """Seals and opens byte strings with the token's AES key, bound to associated data."""

    connection: HsmConnection
    key_label: str

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE_SIZE)
        params = GCMParams(nonce, aad, 128)
        ciphertext = self.connection.run(
            lambda keyring: keyring.secret_key(self.key_label).encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params
            )
        )
        return _FORMAT_V1 + nonce + ciphertext

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if sealed[:1] != _FORMAT_V1 or len(sealed) < 1 + _NONCE_SIZE + 16:
            raise SealError("not a sealed value of a known format")
        params = GCMParams(sealed[1 : 1 + _NONCE_SIZE], aad, 128)
        body = sealed[1 + _NONCE_SIZE :]

        def decrypt(keyring: Keys) -> bytes:
            key = keyring.secret_key(self.key_label)
            try:
                plaintext: bytes = key.decrypt(body, mechanism=Mechanism.AES_GCM,
                                               mechanism_param=params)
                return plaintext
            except p11.PKCS11Error as exc:
                # Tokens report a failed tag check differently (SoftHSM2: CKR_GENERAL_ERROR);
                # if the same session still round-trips a probe, the value was at fault.
                if not _session_works(key):
                    raise
                raise SealError("sealed value does not open with this key and serial") from exc

        return self.connection.run(decrypt)


def _session_works(key: Any) -> bool:
    probe = GCMParams(bytes(_NONCE_SIZE), b"probe", 128)
    try:
        sealed = key.encrypt(b"probe", mechanism=Mechanism.AES_GCM, mechanism_param=probe)
        opened: bytes = key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=probe)
    except p11.PKCS11Error:
        return False
    return opened == b"probe"
