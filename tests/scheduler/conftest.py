"""Fixtures of the scheduler tests: a migrated store on the HSM's sealer, rotators, and the
environment a scheduler subprocess needs to reach the same token, CA and database."""

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from authority.crl_publisher import CrlPublisher
from devtools import softhsm
from hsm.authority import CertificateAuthority
from repository import Store, create_engine_for, migrate
from scheduler.rotation import Rotator
from tests.fixtures.hsm import PIN, TOKEN_LABEL

REPO_ROOT = Path(__file__).resolve().parents[2]
CA_LABEL = "ca-ec-256"  # the `authority` fixture's key (tests.fixtures.hsm.make_ca)


@pytest.fixture
def ca_pem_path(authority: CertificateAuthority, softhsm_state: Path) -> Path:
    path = softhsm_state / f"{CA_LABEL}.pem"
    assert path.read_text() == authority.ca_pem
    return path


@pytest.fixture
def make_store(authority: CertificateAuthority) -> Iterator[Callable[[str], Store]]:
    """Stores on migrated databases, with the HSM's key sealer; engines disposed afterwards."""
    stores: list[Store] = []

    def make(url: str) -> Store:
        migrate(url)
        store = Store(create_engine_for(url), authority.sealer)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.engine.dispose()


@pytest.fixture
def store(db_url: str, make_store: Callable[[str], Store]) -> Store:
    return make_store(db_url)


@pytest.fixture
def crl_path(tmp_path: Path) -> Path:
    return tmp_path / "crl" / "crl.pem"


@pytest.fixture
def make_crl(authority: CertificateAuthority, crl_path: Path) -> Callable[..., CrlPublisher]:
    def make(store: Store, validity: timedelta = timedelta(hours=24)) -> CrlPublisher:
        return CrlPublisher(authority, store, str(crl_path), validity)

    return make


@pytest.fixture
def make_rotator(
    authority: CertificateAuthority, make_crl: Callable[..., CrlPublisher]
) -> Callable[..., Rotator]:
    """A rotator with a 2-day renew window (certificates from `issue_due` are due)."""

    def make(store: Store, **options: Any) -> Rotator:
        options.setdefault("renew_window", timedelta(days=2))
        options.setdefault("default_ttl", timedelta(days=30))
        crl = options.pop("crl", None) or make_crl(store)
        return Rotator(authority, store, crl, **options)

    return make


@pytest.fixture
def scheduler_env(
    ca_pem_path: Path, crl_path: Path, softhsm_state: Path
) -> Callable[..., dict[str, str]]:
    """The environment of a `python -m scheduler` subprocess on the test token and CA."""

    def env(db_url: str, **extra: str) -> dict[str, str]:
        values = dict(os.environ)
        values.update({
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT),
                                                      os.environ.get("PYTHONPATH", "")) if p),
            "SOFTHSM2_CONF": str(softhsm_state / "softhsm2.conf"),
            "MF_CERTS_DB_URL": db_url.replace("postgresql+psycopg://", "postgresql://"),
            "MF_CERTS_HSM_MODULE": softhsm.find_module(),
            "MF_CERTS_HSM_TOKEN": TOKEN_LABEL,
            "MF_CERTS_HSM_PIN": PIN,
            "MF_CERTS_HSM_KEY_LABEL": CA_LABEL,
            "MF_CERTS_HSM_POOL_SIZE": "2",
            "MF_CERTS_SIGN_CA_PATH": str(ca_pem_path),
            "MF_CERTS_CRL_PATH": str(crl_path),
            "MF_CERTS_RENEW_WINDOW": "48h",
            "MF_CERTS_LOG_LEVEL": "info",
        })
        values.update(extra)
        return values

    return env
