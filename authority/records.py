"""The store's record of a certificate the authority has just issued."""

from asn1crypto import pem

from hsm.certificate import IssuedCertificate
from hsm.client_keys import ClientKey
from hsm.public_key import certificate_key
from repository import Certificate, NewCertificate


def new_record(thing_id: str, issued: IssuedCertificate,
               owner_id: str | None = None) -> NewCertificate:
    """The record to store for ``issued``, made for ``thing_id``."""
    return NewCertificate(
        serial=issued.serial_hex,
        thing_id=thing_id,
        certificate_pem=issued.certificate_pem,
        private_key_pem=issued.private_key_pem or None,
        private_key_type=issued.key_type,
        key_bits=issued.key_bits,
        not_before=issued.not_before,
        expires_at=issued.not_after,
        owner_id=owner_id,
        device_key=not issued.private_key_pem,
    )


def same_device_key(record: Certificate) -> ClientKey | None:
    """For a certificate of a device-held key, that public key (to certify it again on
    renewal); None for a key the service generated (a renewal generates a new one)."""
    if not record.device_key:
        return None
    return certificate_key(pem.unarmor(record.certificate_pem.encode())[2])
