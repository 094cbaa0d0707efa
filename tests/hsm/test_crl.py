"""CRLs (SPEC section 7) signed in the HSM, checked with openssl and cryptography."""

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from asn1crypto import crl as asn1_crl
from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID, SignatureAlgorithmOID

from hsm.authority import CertificateAuthority
from hsm.certificate import new_serial
from hsm.crl import REASON_CODES, revoked_entry
from tests.hsm.helpers import CA_TYPES, openssl, type_id, verify_signature

SIGNATURE_OIDS = {
    ("rsa", 2048): SignatureAlgorithmOID.RSA_WITH_SHA256,
    ("ec", 256): SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    ("ec", 384): SignatureAlgorithmOID.ECDSA_WITH_SHA384,
}
REASONS = [None, "unspecified", "key_compromise", "ca_compromise", "affiliation_changed",
           "superseded", "cessation_of_operation", "certificate_hold", "privilege_withdrawn",
           "aa_compromise"]


def openssl_verify_crl(crl_der: bytes, ca_file: Path, tmp_path: Path) -> tuple[bool, str]:
    """Whether ``openssl crl -verify`` accepts the CRL with this CA; and what it said."""
    crl_file = tmp_path / f"crl-{time.monotonic_ns()}.der"
    crl_file.write_bytes(crl_der)
    result = openssl("crl", "-inform", "DER", "-in", str(crl_file), "-CAfile", str(ca_file),
                     "-noout", "-verify")
    said = result.stdout + result.stderr
    return result.returncode == 0 and "verify OK" in said, said


def openssl_serials(crl_der: bytes, tmp_path: Path) -> set[int]:
    """The serial numbers ``openssl crl -text`` lists (a second parser next to cryptography)."""
    crl_file = tmp_path / "listed.der"
    crl_file.write_bytes(crl_der)
    result = openssl("crl", "-inform", "DER", "-in", str(crl_file), "-noout", "-text")
    assert result.returncode == 0, result.stderr
    return {int(match, 16) for match in re.findall(r"Serial Number: ([0-9A-F]+)", result.stdout)}


def _ca_key_id(ca: CertificateAuthority) -> bytes:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    digest: bytes = ca_cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    return digest


def _check_crl(
    ca: CertificateAuthority, ca_type: tuple[str, int], der: bytes, number: int,
    this_update: datetime, next_update: datetime,
) -> x509.CertificateRevocationList:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    crl = x509.load_der_x509_crl(der)
    assert crl.issuer == ca_cert.subject
    assert crl.last_update_utc == this_update
    assert crl.next_update_utc == next_update
    assert crl.signature_algorithm_oid == SIGNATURE_OIDS[ca_type]
    assert crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    verify_signature(ca_cert.public_key(), crl.signature, crl.tbs_certlist_bytes,
                     crl.signature_hash_algorithm)
    assert sorted(e.oid.dotted_string for e in crl.extensions) == sorted(
        [ExtensionOID.CRL_NUMBER.dotted_string, ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string]
    )
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert not aki.critical
    assert aki.value == x509.AuthorityKeyIdentifier(_ca_key_id(ca), None, None)
    parsed = asn1_crl.CertificateList.load(der)
    assert parsed["tbs_cert_list"]["version"].native == "v2"
    return crl


@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_crl_lists_exactly_the_revocations_and_verifies(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    tmp_path: Path,
    ca_type: tuple[str, int],
) -> None:
    ca = make_ca(*ca_type)
    now = datetime.now(UTC).replace(microsecond=0)
    revocations = [
        (new_serial(), now - timedelta(hours=index, seconds=index), reason)
        for index, reason in enumerate(REASONS)
    ]
    # Serials at the DER INTEGER edges, and the largest a 159-bit serial can be.
    revocations += [(1, now, None), (0x7F, now, "superseded"), (0x80, now, None),
                    (2**159 - 1, now - timedelta(days=400), "key_compromise")]
    number = 12345678901234567890  # more than 64 bits: the CRL number is a big integer
    this_update, next_update = now, now + timedelta(hours=24)
    der = ca.crls.build(
        [revoked_entry(serial, when, reason) for serial, when, reason in revocations],
        number, this_update, next_update,
    )

    verified, said = openssl_verify_crl(der, ca_files(*ca_type), tmp_path)
    assert verified, said
    assert openssl_serials(der, tmp_path) == {serial for serial, _, _ in revocations}

    crl = _check_crl(ca, ca_type, der, number, this_update, next_update)
    assert len(crl) == len(revocations)
    listed = {entry.serial_number: entry for entry in crl}
    assert set(listed) == {serial for serial, _, _ in revocations}
    for serial, when, reason in revocations:
        entry = listed[serial]
        assert entry.revocation_date_utc == when
        if reason in (None, "unspecified"):  # RFC 5280 5.3.1: unspecified is left out
            assert len(entry.extensions) == 0
        else:
            assert len(entry.extensions) == 1
            extension = entry.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON)
            assert not extension.critical
            assert isinstance(extension.value, x509.CRLReason)
            assert extension.value.reason == x509.ReasonFlags[reason]
            assert REASON_CODES[reason] == _reason_code(extension.value.reason)
    parsed = asn1_crl.CertificateList.load(der)
    assert parsed.dump(force=True) == der  # canonical DER all the way through


def _reason_code(flag: x509.ReasonFlags) -> int:
    codes = {
        x509.ReasonFlags.unspecified: 0, x509.ReasonFlags.key_compromise: 1,
        x509.ReasonFlags.ca_compromise: 2, x509.ReasonFlags.affiliation_changed: 3,
        x509.ReasonFlags.superseded: 4, x509.ReasonFlags.cessation_of_operation: 5,
        x509.ReasonFlags.certificate_hold: 6, x509.ReasonFlags.remove_from_crl: 8,
        x509.ReasonFlags.privilege_withdrawn: 9, x509.ReasonFlags.aa_compromise: 10,
    }
    return codes[flag]


@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_empty_crl_verifies(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    tmp_path: Path,
    ca_type: tuple[str, int],
) -> None:
    ca = make_ca(*ca_type)
    now = datetime.now(UTC).replace(microsecond=0)
    der = ca.crls.build([], 1, now, now + timedelta(hours=24))
    verified, said = openssl_verify_crl(der, ca_files(*ca_type), tmp_path)
    assert verified, said
    crl = _check_crl(ca, ca_type, der, 1, now, now + timedelta(hours=24))
    assert len(crl) == 0
    # An empty list is left out (RFC 5280 5.1.2.6), not encoded as an empty SEQUENCE.
    assert asn1_crl.CertificateList.load(der)["tbs_cert_list"]["revoked_certificates"].native \
        in (None, [])
    assert openssl_serials(der, tmp_path) == set()


def test_crl_of_another_ca_does_not_verify(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    tmp_path: Path,
) -> None:
    """The openssl and cryptography checks above can fail: a CRL checked against another CA."""
    ec_ca, rsa_ca = make_ca("ec", 256), make_ca("rsa", 2048)
    now = datetime.now(UTC).replace(microsecond=0)
    entry = revoked_entry(5, now)
    der = ec_ca.crls.build([entry], 2, now, now + timedelta(hours=1))
    verified, said = openssl_verify_crl(der, ca_files("rsa", 2048), tmp_path)
    assert not verified, said
    other_key = x509.load_pem_x509_certificate(rsa_ca.ca_pem.encode()).public_key()
    assert not x509.load_der_x509_crl(der).is_signature_valid(other_key)  # type: ignore[arg-type]
    tampered = bytearray(der)
    position = der.index(entry) + 4  # SEQUENCE header, INTEGER header, then the serial
    assert tampered[position] == 5
    tampered[position] = 6  # revoke serial 6 instead of 5: the signature no longer fits
    verified, said = openssl_verify_crl(bytes(tampered), ca_files("ec", 256), tmp_path)
    assert not verified, said


def test_crl_times_are_utc_and_generalized_after_2049(
    authority: CertificateAuthority, ca_files: Callable[[str, int], Path], tmp_path: Path
) -> None:
    plus_two = timezone(timedelta(hours=2))
    this_update = datetime(2049, 12, 31, 23, 30, tzinfo=UTC)
    next_update = datetime(2050, 1, 2, 2, 0, tzinfo=plus_two)  # 2050-01-02T00:00Z
    revoked_at = datetime(2050, 1, 1, 12, 0, 1, tzinfo=UTC)
    der = authority.crls.build([revoked_entry(77, revoked_at, "superseded")], 9,
                               this_update, next_update)
    verified, said = openssl_verify_crl(der, ca_files("ec", 256), tmp_path)
    assert verified, said
    crl = _check_crl(authority, ("ec", 256), der, 9, this_update, next_update)
    tbs = asn1_crl.CertificateList.load(der)["tbs_cert_list"]
    assert tbs["this_update"].chosen.dump() == b"\x17\x0d491231233000Z"
    assert tbs["next_update"].chosen.dump() == b"\x18\x0f20500102000000Z"
    revoked = tbs["revoked_certificates"][0]["revocation_date"]
    assert revoked.chosen.dump() == b"\x18\x0f20500101120001Z"
    assert crl.get_revoked_certificate_by_serial_number(77) is not None


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="reason"):
        revoked_entry(1, datetime.now(UTC), "stolen")


def test_crl_of_100k_entries(
    authority: CertificateAuthority, ca_files: Callable[[str, int], Path], tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    serials = [new_serial() for _ in range(100_000)]
    reasons = [None, "key_compromise", "superseded", "unspecified"]
    started = time.monotonic()
    entries = [revoked_entry(serial, now - timedelta(seconds=index % 86400),
                             reasons[index % 4]) for index, serial in enumerate(serials)]
    der = authority.crls.build(entries, 100_000, now, now + timedelta(hours=24))
    built_in = time.monotonic() - started
    assert built_in < 10, f"building a 100k-entry CRL took {built_in:.1f} s"
    assert len(der) > 100_000 * 40

    verified, said = openssl_verify_crl(der, ca_files("ec", 256), tmp_path)
    assert verified, said
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(authority_public_key(authority))  # type: ignore[arg-type]
    assert len(crl) == 100_000
    for index in (0, 1, 4_999, 65_536, 99_999):
        entry = crl.get_revoked_certificate_by_serial_number(serials[index])
        assert entry is not None
        assert entry.revocation_date_utc == now - timedelta(seconds=index % 86400)
    assert {entry.serial_number for entry in crl} == set(serials)


def authority_public_key(authority: CertificateAuthority) -> object:
    return x509.load_pem_x509_certificate(authority.ca_pem.encode()).public_key()
