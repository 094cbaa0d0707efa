"""Response bodies at the edge (msgspec structs), as the Go service writes them; each field is
described for the OpenAPI document."""

from typing import Annotated, Literal, cast

import msgspec

from authority.durations import rfc3339
from authority.service import CertificateView

_CERT = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
_SERIAL = "5f1d8c2e9b7a4e36a0d1c3b2a1908f7e6d5c4b3a"
_THING = "7a1a1000-0000-4000-8000-0000000000a1"
_TIME = "2027-08-24T10:00:00Z"

Serial = Annotated[str, msgspec.Meta(
    description="Serial number, lowercase hex without separators (a record imported from the "
                "Go service keeps its decimal serial).", examples=[_SERIAL])]
ThingId = Annotated[str, msgspec.Meta(description="The thing the certificate was issued for.",
                                      examples=[_THING])]
Certificate = Annotated[str, msgspec.Meta(description="The certificate, PEM.",
                                          examples=[_CERT])]
IssuingCa = Annotated[str, msgspec.Meta(description="The issuing CA's certificate, PEM.",
                                        examples=[_CERT])]
CaChain = Annotated[list[str], msgspec.Meta(
    description="PEM certificates from the issuing CA up to the root.", examples=[[_CERT]])]
KeyTypeName = Literal["rsa", "ec"]
KeyType = Annotated[KeyTypeName, msgspec.Meta(
    description="The certified key's type.", examples=["rsa"])]
KeyBits = Annotated[int, msgspec.Meta(description="RSA modulus size or EC curve size.",
                                      examples=[2048])]
ExpiresAt = Annotated[str, msgspec.Meta(
    description="notAfter, RFC 3339 UTC, second precision.", examples=[_TIME])]
Downloaded = Annotated[bool, msgspec.Meta(
    description="Whether the device has fetched it with its thing key.", examples=[False])]
Moment = Annotated[str, msgspec.Meta(description="When it was revoked, RFC 3339 UTC.",
                                     examples=[_TIME])]


class IssueBody(msgspec.Struct):
    """A new certificate with its private key (sent with `Cache-Control: no-store`)."""

    serial: Serial
    thing_id: ThingId
    certificate: Certificate
    issuing_ca: IssuingCa
    ca_chain: CaChain
    private_key: Annotated[str, msgspec.Meta(
        description="The private key, PEM: PKCS#1 for RSA, SEC1 for EC (the traditional "
                    "OpenSSL blocks); `\"\"` when the device sent a CSR. No other answer "
                    "carries it (so this document holds no key, not even as an example).")]
    private_key_type: KeyType
    key_bits: KeyBits
    expires_at: ExpiresAt


class ViewBody(msgspec.Struct):
    """A certificate, never its private key."""

    serial: Serial
    thing_id: ThingId
    certificate: Certificate
    issuing_ca: IssuingCa
    ca_chain: CaChain
    private_key_type: KeyType
    key_type: Annotated[KeyTypeName, msgspec.Meta(
        description="Same as `private_key_type`.", examples=["rsa"])]
    key_bits: KeyBits
    expires_at: ExpiresAt
    downloaded: Downloaded


class SerialItem(msgspec.Struct):
    """One active certificate of the thing."""

    thing_id: ThingId
    cert_serial: Serial
    expires_at: ExpiresAt
    downloaded: Downloaded


class SerialsBody(msgspec.Struct):
    """A page of the thing's active certificates, ordered by `expires_at` then serial."""

    total: Annotated[int, msgspec.Meta(ge=0, description="Active certificates of the thing.")]
    offset: Annotated[int, msgspec.Meta(ge=0, description="As requested (default 0).")]
    limit: Annotated[int, msgspec.Meta(ge=1, le=200, description="As requested (default 10).")]
    certs: list[SerialItem]
    serials: Annotated[list[str], msgspec.Meta(description="The serials of `certs`.",
                                               examples=[[_SERIAL]])]


class CertsBody(msgspec.Struct):
    """A page of the thing's active certificates as view bodies."""

    total: Annotated[int, msgspec.Meta(ge=0, description="Active certificates of the thing.")]
    offset: Annotated[int, msgspec.Meta(ge=0, description="As requested (default 0).")]
    limit: Annotated[int, msgspec.Meta(ge=1, le=200, description="As requested (default 10).")]
    certs: list[ViewBody]


class RevokeBody(msgspec.Struct):
    """The revocation time, twice (the Go service's two spellings)."""

    revocation_time: Moment
    RevocationTime: Moment


HealthStatus = Literal["pass", "warn", "fail"]


class HealthCheck(msgspec.Struct):
    """One dependency: the HSM, the database, the identity services, the CRL."""

    status: HealthStatus
    output: Annotated[str, msgspec.Meta(description="What failed or is slow.")] = ""


class HealthBody(msgspec.Struct):
    """`application/health+json`: `fail` (503) when a dependency makes the service unusable."""

    status: HealthStatus
    version: Annotated[str, msgspec.Meta(examples=["0.1.0"])]
    commit: str
    description: Annotated[str, msgspec.Meta(examples=["certs service"])]
    build_time: str
    checks: Annotated[dict[str, HealthCheck], msgspec.Meta(
        description="A check per dependency (`hsm`, `database`, `things`, ...).")]


class ErrorBody(msgspec.Struct):
    """Every error: the message says what the caller did wrong."""

    error: Annotated[str, msgspec.Meta(description="The message (exact texts per status).",
                                       examples=["entity not found"])]


def _key_type(view: CertificateView) -> KeyTypeName:
    return cast(KeyTypeName, view.private_key_type)


def issue_body(view: CertificateView) -> IssueBody:
    return IssueBody(
        serial=view.serial, thing_id=view.thing_id, certificate=view.certificate,
        issuing_ca=view.issuing_ca, ca_chain=view.ca_chain, private_key=view.private_key or "",
        private_key_type=_key_type(view), key_bits=view.key_bits,
        expires_at=rfc3339(view.expires_at),
    )


def view_body(view: CertificateView) -> ViewBody:
    return ViewBody(
        serial=view.serial, thing_id=view.thing_id, certificate=view.certificate,
        issuing_ca=view.issuing_ca, ca_chain=view.ca_chain,
        private_key_type=_key_type(view), key_type=_key_type(view),
        key_bits=view.key_bits, expires_at=rfc3339(view.expires_at), downloaded=view.downloaded,
    )
