"""Fixtures of the hsm tests on top of the session tokens of tests/fixtures/hsm.py.

Every test here that uses a token runs once per PKCS#11 implementation: ``hsm_backend``
is parametrized over SoftHSM2 and tpm2-pkcs11 (a software TPM behind tpm2-abrmd). Tests that
run a scenario in a child process pass ``hsm_backend`` on to it.
"""

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hsm.authority import CertificateAuthority
from hsm.client_keys import ClientKey, generate_client_key
from hsm.connection import HsmConfig, HsmConnection
from tests.fixtures.hsm import BACKENDS, backend_fixtures

# Overrides the suite's SoftHSM2-only chain: each hsm test runs on both modules.
globals().update(backend_fixtures(BACKENDS))


@pytest.fixture(scope="session")
def short_wait_connection(hsm_config: HsmConfig) -> Iterator[HsmConnection]:
    """A second connection to the session token that gives up after 1 s instead of 5 s.

    For tests whose failure mode (while a bug is open) is "retry until the deadline": they
    then fail in one second, not five. It shares the process's login with ``hsm_connection``.
    """
    connection = HsmConnection(replace(hsm_config, wait_seconds=1.0, pool_size=2))
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def ca_files(
    make_ca: Callable[[str, int], CertificateAuthority], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, int], Path]:
    """The PEM file of the CA of a given key type, for openssl's -CAfile."""
    directory = tmp_path_factory.mktemp("ca-files")

    def path(key_type: str, size: int) -> Path:
        file = directory / f"ca-{key_type}{size}.pem"
        if not file.exists():
            file.write_text(make_ca(key_type, size).ca_pem)
        return file

    return path


@pytest.fixture(scope="session")
def client_key() -> Callable[[str, int], ClientKey]:
    """One generated client key per type, shared by the tests (RSA generation is slow)."""
    made: dict[tuple[str, int], ClientKey] = {}

    def key(key_type: str, bits: int) -> ClientKey:
        if (key_type, bits) not in made:
            made[(key_type, bits)] = generate_client_key(key_type, bits)
        return made[(key_type, bits)]

    return key
