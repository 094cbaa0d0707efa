"""The CA as the rest of the service sees it: one object that signs certificates and CRLs.

Opening it checks everything an operator can get wrong before the first request: the token and
PIN, the mechanisms the CA key and the sealing need, the CA key, and that the configured CA
certificate belongs to that key.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from asn1crypto import pem as asn1_pem
from asn1crypto import x509

from hsm.ca_key import CaSigner, check_matches
from hsm.certificate import CertificateTemplate, IssuedCertificate
from hsm.client_keys import ClientKey
from hsm.connection import HsmConfig, HsmConnection
from hsm.crl import CrlTemplate
from hsm.errors import HsmError, HsmUnavailable
from hsm.sealing import HsmSealer, ensure_sealing_key


@dataclass(frozen=True)
class AuthorityConfig:
    """What the service needs to sign: the token, the key labels and the CA certificate."""

    hsm: HsmConfig
    ca_certificate_path: str
    ca_key_label: str = "certs-ca"
    sealing_key_label: str = "certs-seal"
    crl_url: str | None = None
    ocsp_url: str | None = None


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str


def load_certificate(path: str) -> x509.Certificate:
    """An X.509 certificate from a PEM or DER file."""
    data = Path(path).read_bytes()
    if asn1_pem.detect(data):
        _, _, data = asn1_pem.unarmor(data)
    return x509.Certificate.load(data)


class CertificateAuthority:
    """Issues client certificates and CRLs with the CA key in the HSM; thread-safe."""

    def __init__(self, config: AuthorityConfig, connection: HsmConnection | None = None) -> None:
        try:
            self.ca_certificate = load_certificate(config.ca_certificate_path)
        except (OSError, ValueError) as exc:
            raise HsmError(
                f"cannot read the CA certificate {config.ca_certificate_path}: {exc}"
            ) from exc
        self.connection = connection or HsmConnection(config.hsm)
        self.signer = CaSigner.for_public_key(
            self.connection, config.ca_key_label, self.ca_certificate.public_key
        )
        # What the module lacks is named before anything is tried with it.
        self.signer.scheme.require(self.connection.capabilities)
        check_matches(self.signer, self.ca_certificate.public_key, config.ca_certificate_path)
        ensure_sealing_key(self.connection, config.sealing_key_label)
        self.sealer = HsmSealer(self.connection, config.sealing_key_label)
        self.certificates = CertificateTemplate(
            self.ca_certificate, self.signer, config.crl_url, config.ocsp_url
        )
        self.crls = CrlTemplate(self.ca_certificate, self.signer)
        self.ca_pem = load_pem_text(config.ca_certificate_path)
        # The file may hold a chain: the issuing CA first, then the CAs above it.
        self.ca_chain = tuple(pem_blocks(self.ca_pem))

    @property
    def not_after(self) -> datetime:
        """The CA certificate's own expiry; no client certificate may outlive it."""
        moment: datetime = self.ca_certificate["tbs_certificate"]["validity"]["not_after"].native
        return moment

    def issue(
        self, subject_cn: str, key: ClientKey, ttl: timedelta, now: datetime | None = None
    ) -> IssuedCertificate:
        return self.certificates.issue(subject_cn, key, ttl, now)

    def health(self, wait_seconds: float = 1.0) -> Health:
        """Whether the HSM signs right now: a real signature, bounded in time."""
        try:
            self.signer.sign(b"health", wait_seconds=wait_seconds)
        except HsmUnavailable as exc:
            reason = self.connection.failure or str(exc)
            return Health(False, f"HSM unusable: {reason}")
        except Exception as exc:  # noqa: BLE001 - a health check reports every failure
            return Health(False, f"HSM error: {type(exc).__name__}: {exc}")
        return Health(True, "ok")


def pem_blocks(text: str) -> list[str]:
    """The PEM certificates in ``text``, each ending with a newline."""
    end = "-----END CERTIFICATE-----"
    return [block.strip() + "\n" + end + "\n" for block in text.split(end) if block.strip()]


def load_pem_text(path: str) -> str:
    """The certificate at ``path`` as PEM text, whatever its encoding on disk."""
    data = Path(path).read_bytes()
    if asn1_pem.detect(data):
        return data.decode()
    return asn1_pem.armor("CERTIFICATE", data).decode()
