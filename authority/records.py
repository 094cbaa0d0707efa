"""The store's record of a certificate the authority has just issued."""

from hsm.certificate import IssuedCertificate
from repository import NewCertificate


def new_record(thing_id: str, issued: IssuedCertificate,
               owner_id: str | None = None) -> NewCertificate:
    """The record to store for ``issued``, made for ``thing_id``."""
    return NewCertificate(
        serial=issued.serial_hex,
        thing_id=thing_id,
        certificate_pem=issued.certificate_pem,
        private_key_pem=issued.private_key_pem,
        private_key_type=issued.key_type,
        key_bits=issued.key_bits,
        not_before=issued.not_before,
        expires_at=issued.not_after,
        owner_id=owner_id,
    )
