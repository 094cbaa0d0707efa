"""Configuration errors at start are typed and say what is wrong (SPEC section 6).

Wrong PIN and missing token are in test_startup_errors.py: they run in a child process because
looking for a missing token re-initialises the PKCS#11 module for the whole process.
"""

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from hsm.authority import AuthorityConfig, CertificateAuthority
from hsm.ca_key import generate_ca_key
from hsm.connection import HsmConfig, HsmConnection
from hsm.errors import CaMismatch, HsmError, KeyNotFound


@pytest.fixture(scope="module")
def spare_keys(hsm_connection: HsmConnection) -> dict[str, str]:
    """CA-type keys in the token that no certificate belongs to."""
    labels = {"ec256": "spare-ec-256", "rsa2048": "spare-rsa-2048"}
    generate_ca_key(hsm_connection, labels["ec256"], "ec", 256)
    generate_ca_key(hsm_connection, labels["rsa2048"], "rsa", 2048)
    return labels


def _open(config: HsmConfig, connection: HsmConnection, ca_file: Path,
          key_label: str) -> CertificateAuthority:
    return CertificateAuthority(
        AuthorityConfig(hsm=config, ca_certificate_path=str(ca_file), ca_key_label=key_label),
        connection=connection,
    )


MISMATCHES = {
    # name: (certificate of the CA of this type, key label)
    "ec256-cert-other-ec256-key": (("ec", 256), "spare:ec256"),
    "rsa2048-cert-other-rsa2048-key": (("rsa", 2048), "spare:rsa2048"),
    "ec384-cert-ec256-key": (("ec", 384), "ca-ec-256"),
    "ec256-cert-ec384-key": (("ec", 256), "ca-ec-384"),
    "rsa2048-cert-ec256-key": (("rsa", 2048), "ca-ec-256"),
    "ec256-cert-rsa2048-key": (("ec", 256), "ca-rsa-2048"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_ca_certificate_of_another_key_is_ca_mismatch(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    spare_keys: dict[str, str],
    hsm_config: HsmConfig,
    short_wait_connection: HsmConnection,
    case: str,
) -> None:
    """Refuses to start with CaMismatch naming certificate and key, without waiting it out."""
    for ca_type in (("ec", 256), ("ec", 384), ("rsa", 2048)):
        make_ca(*ca_type)  # the keys labelled ca-<type>-<size> exist
    cert_type, key = MISMATCHES[case]
    label = spare_keys[key.split(":")[1]] if key.startswith("spare:") else key
    ca_file = ca_files(*cert_type)
    started = time.monotonic()
    with pytest.raises(CaMismatch) as raised:
        _open(replace(hsm_config, wait_seconds=1.0), short_wait_connection, ca_file, label)
    elapsed = time.monotonic() - started
    message = str(raised.value)
    assert str(ca_file) in message
    assert repr(label) in message or label in message
    assert "match" in message
    assert elapsed < 0.9, f"detecting the mismatch took {elapsed:.2f} s (the retry deadline)"


def test_matching_certificate_and_key_open(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    hsm_config: HsmConfig, short_wait_connection: HsmConnection,
) -> None:
    """The control for the mismatch cases: the right pair opens (through the same path)."""
    make_ca("ec", 384)
    authority = _open(hsm_config, short_wait_connection, ca_files("ec", 384), "ca-ec-384")
    assert authority.health().ok


def test_unknown_key_label_is_key_not_found(
    ca_files: Callable[[str, int], Path], hsm_config: HsmConfig,
    short_wait_connection: HsmConnection,
) -> None:
    label = "no-such-ca-key"
    started = time.monotonic()
    with pytest.raises(KeyNotFound) as raised:
        _open(hsm_config, short_wait_connection, ca_files("ec", 256), label)
    elapsed = time.monotonic() - started
    assert elapsed < 0.9, f"took {elapsed:.2f} s: a missing key must not wait for the deadline"
    # An operator reading this must learn which label is missing.
    assert label in str(raised.value), f"message {str(raised.value)!r} does not name {label!r}"


def test_unreadable_ca_certificate_is_hsm_error(
    hsm_config: HsmConfig, hsm_connection: HsmConnection, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(HsmError, match=str(missing)):
        _open(hsm_config, hsm_connection, missing, "ca-ec-256")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"this is not a certificate")
    with pytest.raises(HsmError, match=str(garbage)):
        _open(hsm_config, hsm_connection, garbage, "ca-ec-256")


@pytest.fixture
def one_session_connection(hsm_config: HsmConfig) -> Iterator[HsmConnection]:
    connection = HsmConnection(replace(hsm_config, pool_size=1, wait_seconds=0.5))
    yield connection
    connection.close()


def test_operation_raising_does_not_lose_its_session(
    one_session_connection: HsmConnection,
) -> None:
    """An exception from the operation passed to run() must give the session back to the pool.

    With a pool of one, a session lost this way leaves the connection unable to ever run
    anything again ("no free HSM session" after every wait).
    """

    def broken(keys: object) -> None:
        raise ValueError("a bug in the caller's operation")

    for _ in range(3):
        with pytest.raises(ValueError, match="caller's operation"):
            one_session_connection.run(broken)
    assert one_session_connection.run(lambda keys: "still works") == "still works"
