"""Building the service from settings: HSM, store, identity client, CRL publisher."""

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


def open_authority(settings: Settings) -> CertificateAuthority:
    """The CA in the HSM, checked against the configured certificate."""
    return CertificateAuthority(AuthorityConfig(
        hsm=HsmConfig(module_path=settings.hsm_module, pin=settings.hsm_pin,
                      token_label=settings.hsm_token, pool_size=settings.hsm_pool_size,
                      wait_seconds=settings.hsm_timeout),
        ca_certificate_path=settings.ca_path,
        ca_key_label=settings.hsm_key_label,
        sealing_key_label=settings.hsm_seal_label,
        crl_url=settings.crl_url or None,
        ocsp_url=settings.ocsp_url or None,
    ))


def build(settings: Settings, authority: CertificateAuthority | None = None) -> Components:
    """Every component the HTTP app needs, opened in this process."""
    authority = authority or open_authority(settings)
    store = Store(create_engine_for(settings.db_url), authority.sealer)
    things = ThingsClient(settings.things_url, timeout=settings.things_timeout,
                          tls=settings.client_tls, ca_certs=settings.ca_certs or None)
    crl = CrlPublisher(authority, store, settings.crl_path, settings.crl_validity)
    service = CertsService(settings, authority, store, things, crl,
                           threads=settings.hsm_pool_size)
    return Components(service, authority, store, things)
