"""Opening the service's parts from the settings: the CA in the HSM, the store, the identity
clients, the CRL publisher and the use cases. The HTTP app, the scheduler and the CLI all open
them here."""

from dataclasses import dataclass

from authority.crl_publisher import CrlPublisher
from authority.identity import ThingsClient
from authority.service import CertsService
from authority.settings import Settings
from hsm.authority import AuthorityConfig, CertificateAuthority
from hsm.connection import HsmConfig
from repository import Store, create_engine_for


@dataclass
class Components:
    service: CertsService
    authority: CertificateAuthority
    store: Store
    things: ThingsClient


def hsm_config(settings: Settings, pool_size: int | None = None) -> HsmConfig:
    """The PKCS#11 module, token, PIN and pool of the settings."""
    return HsmConfig(module_path=settings.hsm_module, pin=settings.hsm_pin,
                     token_label=settings.hsm_token,
                     pool_size=pool_size or settings.hsm_pool_size,
                     wait_seconds=settings.hsm_timeout)


def open_authority(settings: Settings) -> CertificateAuthority:
    """The CA in the HSM, checked against the configured certificate."""
    return CertificateAuthority(AuthorityConfig(
        hsm=hsm_config(settings),
        ca_certificate_path=settings.ca_path,
        ca_key_label=settings.hsm_key_label,
        sealing_key_label=settings.hsm_seal_label,
        crl_url=settings.crl_url or None,
        ocsp_url=settings.ocsp_url or None,
    ))


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
