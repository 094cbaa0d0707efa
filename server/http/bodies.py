"""Response bodies at the edge (msgspec structs), as the Go service writes them."""


import msgspec

from authority.durations import rfc3339
from authority.service import CertificateView


class IssueBody(msgspec.Struct):
    serial: str
    thing_id: str
    certificate: str
    issuing_ca: str
    ca_chain: list[str]
    private_key: str
    private_key_type: str
    key_bits: int
    expires_at: str


class ViewBody(msgspec.Struct):
    serial: str
    thing_id: str
    certificate: str
    issuing_ca: str
    ca_chain: list[str]
    private_key_type: str
    key_type: str
    key_bits: int
    expires_at: str
    downloaded: bool


class SerialItem(msgspec.Struct):
    thing_id: str
    cert_serial: str
    expires_at: str
    downloaded: bool


class SerialsBody(msgspec.Struct):
    total: int
    offset: int
    limit: int
    certs: list[SerialItem]
    serials: list[str]


class CertsBody(msgspec.Struct):
    total: int
    offset: int
    limit: int
    certs: list[ViewBody]


class RevokeBody(msgspec.Struct):
    revocation_time: str
    RevocationTime: str


class ErrorBody(msgspec.Struct):
    error: str


def issue_body(view: CertificateView) -> IssueBody:
    return IssueBody(
        serial=view.serial, thing_id=view.thing_id, certificate=view.certificate,
        issuing_ca=view.issuing_ca, ca_chain=view.ca_chain, private_key=view.private_key or "",
        private_key_type=view.private_key_type, key_bits=view.key_bits,
        expires_at=rfc3339(view.expires_at),
    )


def view_body(view: CertificateView) -> ViewBody:
    return ViewBody(
        serial=view.serial, thing_id=view.thing_id, certificate=view.certificate,
        issuing_ca=view.issuing_ca, ca_chain=view.ca_chain,
        private_key_type=view.private_key_type, key_type=view.private_key_type,
        key_bits=view.key_bits, expires_at=rfc3339(view.expires_at), downloaded=view.downloaded,
    )
