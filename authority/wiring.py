"""Opening the service's parts from the settings: the CA in the HSM, the store, the identity
clients, the CRL publisher and the use cases. The HTTP app, the scheduler and the CLI all open
them here. An HTTP worker whose HSM cannot be opened still serves (``open_serving``): reads
need no HSM, and signing answers 503 at once until a new worker can sign."""

from dataclasses import dataclass
from pathlib import Path

from authority.crl_publisher import CrlPublisher
from authority.identity import ThingsClient
from authority.service import CertsService
from authority.settings import Settings
from hsm.authority import (
    AuthorityConfig,
    CertificateAuthority,
    load_certificate,
    load_pem_text,
    pem_blocks,
)
from hsm.ca_key import CaSigner
from hsm.certificate import CertificateTemplate
from hsm.connection import HsmConfig, OfflineConnection
from hsm.crl import CrlTemplate
from hsm.errors import HsmError
from hsm.probe import ProbeRequest
from hsm.sealing import HsmSealer
from repository import Store, create_engine_for


@dataclass
class Components:
    service: CertsService
    authority: CertificateAuthority
    store: Store
    things: ThingsClient
    degraded: str | None = None  # why this process serves without its HSM


def hsm_config(settings: Settings, pool_size: int | None = None) -> HsmConfig:
    """The PKCS#11 module, token, PIN and pool of the settings."""
    return HsmConfig(module_path=settings.hsm_module, pin=settings.hsm_pin,
                     token_label=settings.hsm_token,
                     pool_size=pool_size or settings.hsm_pool_size,
                     wait_seconds=settings.hsm_timeout)


def authority_config(settings: Settings) -> AuthorityConfig:
    """The token, key labels and CA certificate of the settings."""
    return AuthorityConfig(
        hsm=hsm_config(settings),
        ca_certificate_path=settings.ca_path,
        ca_key_label=settings.hsm_key_label,
        sealing_key_label=settings.hsm_seal_label,
        crl_url=settings.crl_url or None,
        ocsp_url=settings.ocsp_url or None,
    )


def open_authority(settings: Settings) -> CertificateAuthority:
    """The CA in the HSM, checked against the configured certificate."""
    return CertificateAuthority(authority_config(settings))


class OfflineAuthority(CertificateAuthority):
    """The CA of a process that could not open its HSM: the certificate is known, so views,
    lists and the CA chain are served; every signature, seal or unseal raises HsmUnavailable
    at once (``reason`` is what /health says)."""

    def __init__(self, config: AuthorityConfig, reason: str) -> None:
        self.ca_certificate = load_certificate(config.ca_certificate_path)
        self.connection = OfflineConnection(config.hsm, reason)
        self.signer = CaSigner.for_public_key(self.connection, config.ca_key_label,
                                              self.ca_certificate.public_key)
        self.sealer = HsmSealer(self.connection, config.sealing_key_label)
        self.certificates = CertificateTemplate(self.ca_certificate, self.signer,
                                                config.crl_url, config.ocsp_url)
        self.crls = CrlTemplate(self.ca_certificate, self.signer)
        self.ca_pem = load_pem_text(config.ca_certificate_path)
        self.ca_chain = tuple(pem_blocks(self.ca_pem))


def open_serving(settings: Settings) -> Components:
    """``build``, or when the HSM cannot be opened the same parts on an OfflineAuthority, with
    ``degraded`` saying why: the process serves reads and answers 503 to signing at once."""
    try:
        return build(settings)
    except HsmError as exc:
        if not Path(settings.ca_path).is_file():
            raise
        reason = f"this worker started without its HSM ({exc}); it is replaced by one that " \
                 "signs as soon as the HSM is usable again"
    components = build(settings, OfflineAuthority(authority_config(settings), reason))
    components.degraded = reason
    return components


def probe_request(settings: Settings) -> ProbeRequest:
    """What ``python -m hsm.probe`` needs to find out whether a new process could sign."""
    return ProbeRequest(module_path=settings.hsm_module, token_label=settings.hsm_token,
                        pin=settings.hsm_pin, key_label=settings.hsm_key_label,
                        ca_certificate_path=settings.ca_path)


def open_store(settings: Settings, authority: CertificateAuthority, *,
               pool_size: int = 10, max_overflow: int = 10) -> Store:
    """The certificate store on the configured database, sealing keys in the HSM."""
    engine = create_engine_for(settings.db_url, pool_size=pool_size, max_overflow=max_overflow)
    return Store(engine, authority.sealer)


def open_things(settings: Settings) -> ThingsClient:
    """The client of the Mainflux things service."""
    return ThingsClient(settings.things_url, timeout=settings.things_timeout,
                        tls=settings.client_tls, ca_certs=settings.ca_certs or None)


def open_crl(settings: Settings, authority: CertificateAuthority, store: Store) -> CrlPublisher:
    """The CRL publisher writing MF_CERTS_CRL_PATH."""
    return CrlPublisher(authority, store, settings.crl_path, settings.crl_validity)


def build(settings: Settings, authority: CertificateAuthority | None = None) -> Components:
    """Every component the HTTP app and the CLI need, opened in this process."""
    authority = authority or open_authority(settings)
    store = open_store(settings, authority)
    things = open_things(settings)
    service = CertsService(settings, authority, store, things,
                           open_crl(settings, authority, store), threads=settings.hsm_pool_size)
    return Components(service, authority, store, things)
