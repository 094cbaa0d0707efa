"""Encryption of client private keys at rest with keys that never leave the token.

Two formats; which one a token seals with depends on the mechanisms it offers (asked once):

- ``0x01 || 12-byte nonce || AES-256-GCM ciphertext and tag``, with the associated data (the
  certificate's serial) as GCM's AAD, when the token offers ``CKM_AES_GCM``.
- ``0x02 || 16-byte IV || AES-256-CBC ciphertext (PKCS#7 padded) || 32-byte tag`` when it
  offers ``CKM_AES_CBC`` and ``CKM_SHA256_HMAC`` but not GCM (tpm2-pkcs11). Encrypt-then-MAC:
  the tag is HMAC-SHA256, with a second token key labelled ``<label>-mac``, over the SHA-256 of
  the version, the associated data's length and bytes, the IV and the ciphertext; it is
  checked (in the token) before anything is decrypted. The hash keeps the HMAC input short:
  TPMs MAC at most 1 KiB in one call.

The associated data binds a sealed value to its row, so a sealed key copied to another row won't
open. Either format opens on any token that offers its mechanisms.
"""

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.mechanisms import GCMParams

from hsm.capabilities import Capabilities, MissingCapability
from hsm.connection import HsmConnection, Keys
from hsm.errors import SealError

_GCM = b"\x01"
_CBC_HMAC = b"\x02"
_NONCE_SIZE = 12
_IV_SIZE = 16
_TAG_SIZE = 32
_BLOCK = 16
_MAC_DOMAIN = b"certs sealed key v2\x00"
_ENCRYPTION = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
_MAC = MechanismFlag.SIGN | MechanismFlag.VERIFY
_SECRET = {
    Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False, Attribute.WRAP: False, Attribute.UNWRAP: False,
    Attribute.DERIVE: False,
}


def mac_key_label(label: str) -> str:
    """The label of the HMAC key that goes with the AES sealing key ``label``."""
    return f"{label}-mac"


def sealing_format(capabilities: Capabilities) -> bytes:
    """The format byte this token seals with; MissingCapability when it can do neither."""
    if capabilities.has(Mechanism.AES_GCM, _ENCRYPTION, 32):
        return _GCM
    if capabilities.has(Mechanism.AES_CBC, _ENCRYPTION, 32) and capabilities.has(
            Mechanism.SHA256_HMAC, _MAC):
        return _CBC_HMAC
    raise MissingCapability(
        f"the PKCS#11 module {capabilities.module_path} offers neither CKM_AES_GCM nor "
        "CKM_AES_CBC with CKM_SHA256_HMAC (256-bit AES keys), which sealing client keys needs")


def ensure_sealing_key(connection: HsmConnection, label: str) -> bool:
    """Create the sealing key(s) in the token unless they exist; True when one was created."""
    wanted = {label: (KeyType.AES, {Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                                    Attribute.SIGN: False, Attribute.VERIFY: False})}
    if sealing_format(connection.capabilities) == _CBC_HMAC:
        wanted[mac_key_label(label)] = (
            KeyType.GENERIC_SECRET, {Attribute.SIGN: True, Attribute.VERIFY: True,
                                     Attribute.ENCRYPT: False, Attribute.DECRYPT: False})
    created = False
    with connection.admin_session() as session:
        for key_label, (key_type, usage) in wanted.items():
            if list(session.get_objects({Attribute.LABEL: key_label,
                                         Attribute.CLASS: ObjectClass.SECRET_KEY})):
                continue
            _generate_secret(session, key_label, key_type, usage)
            created = True
    return created


def _generate_secret(session: pkcs11.Session, label: str, key_type: KeyType,
                     usage: dict[Attribute, bool]) -> None:
    try:
        session.generate_key(key_type, 256, label=label, store=True,
                             template={**_SECRET, **usage})
    except (p11.FunctionNotSupported, p11.MechanismInvalid, p11.TemplateInconsistent,
            p11.AttributeValueInvalid, p11.KeySizeRange) as exc:
        kind = "256-bit AES" if key_type == KeyType.AES else "256-bit HMAC-SHA256"
        raise MissingCapability(
            f"the token holds no {kind} key labelled {label!r} and the PKCS#11 module "
            f"cannot generate one (C_GenerateKey: {type(exc).__name__}); create it with the "
            "token's own tool") from exc


@dataclass(frozen=True)
class HsmSealer:
    """Seals and opens byte strings with the token's keys, bound to associated data."""

    connection: HsmConnection
    key_label: str

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        if sealing_format(self.connection.capabilities) == _GCM:
            nonce = os.urandom(_NONCE_SIZE)
            params = GCMParams(nonce, aad, 128)
            ciphertext = self.connection.run(
                lambda keyring: keyring.secret_key(self.key_label).encrypt(
                    plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
            return _GCM + nonce + ciphertext
        iv = os.urandom(_IV_SIZE)
        padding = _BLOCK - len(plaintext) % _BLOCK
        padded = plaintext + bytes((padding,)) * padding

        def encrypt_and_mac(keyring: Keys) -> bytes:
            ciphertext: bytes = keyring.secret_key(self.key_label).encrypt(
                padded, mechanism=Mechanism.AES_CBC, mechanism_param=iv)
            tag: bytes = keyring.secret_key(mac_key_label(self.key_label)).sign(
                _mac_input(aad, iv, ciphertext), mechanism=Mechanism.SHA256_HMAC)
            return ciphertext + tag

        return _CBC_HMAC + iv + self.connection.run(encrypt_and_mac)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        if sealed[:1] == _GCM and len(sealed) >= 1 + _NONCE_SIZE + 16:
            return self._open_gcm(sealed, aad)
        body = len(sealed) - 1 - _IV_SIZE - _TAG_SIZE
        if sealed[:1] == _CBC_HMAC and body >= _BLOCK and body % _BLOCK == 0:
            return self._open_cbc_hmac(sealed, aad)
        raise SealError("not a sealed value of a known format")

    def _open_gcm(self, sealed: bytes, aad: bytes) -> bytes:
        self.connection.capabilities.require(Mechanism.AES_GCM, MechanismFlag.DECRYPT,
                                             "opening AES-GCM sealed keys")
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

    def _open_cbc_hmac(self, sealed: bytes, aad: bytes) -> bytes:
        iv = sealed[1 : 1 + _IV_SIZE]
        ciphertext = sealed[1 + _IV_SIZE : -_TAG_SIZE]
        tag = sealed[-_TAG_SIZE:]

        def check_and_decrypt(keyring: Keys) -> bytes | None:
            mac_key = keyring.secret_key(mac_key_label(self.key_label))
            if not mac_key.verify(_mac_input(aad, iv, ciphertext), tag,
                                  mechanism=Mechanism.SHA256_HMAC):
                return None
            padded: bytes = keyring.secret_key(self.key_label).decrypt(
                ciphertext, mechanism=Mechanism.AES_CBC, mechanism_param=iv)
            return padded

        padded = self.connection.run(check_and_decrypt)
        if padded is None:
            raise SealError("sealed value does not open with this key and serial")
        padding = padded[-1]
        if not 1 <= padding <= _BLOCK or padded[-padding:] != bytes((padding,)) * padding:
            raise SealError("sealed value has a valid tag but bad padding")
        return padded[:-padding]


def _mac_input(aad: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    digest = hashlib.sha256(_MAC_DOMAIN + _CBC_HMAC)
    digest.update(len(aad).to_bytes(8, "big") + aad + iv + ciphertext)
    return digest.digest()


def _session_works(key: Any) -> bool:
    probe = GCMParams(bytes(_NONCE_SIZE), b"probe", 128)
    try:
        sealed = key.encrypt(b"probe", mechanism=Mechanism.AES_GCM, mechanism_param=probe)
        opened: bytes = key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=probe)
    except p11.PKCS11Error:
        return False
    return opened == b"probe"
