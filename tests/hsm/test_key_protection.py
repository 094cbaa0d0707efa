"""The CA key stays in the token: generated or imported, it is sensitive and not extractable."""

import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, ObjectClass

from hsm.authority import AuthorityConfig, CertificateAuthority
from hsm.ca_certificate import self_signed_ca
from hsm.ca_key import CaSigner, import_ca_key, key_attributes, read_public_key
from hsm.capabilities import MissingCapability
from hsm.client_keys import generate_client_key
from hsm.connection import HsmConfig, HsmConnection
from hsm.der import pem
from hsm.errors import HsmError
from tests.hsm.helpers import (
    CA_TYPES,
    assert_unreadable,
    openssl,
    openssl_verify_client,
    type_id,
    verify_signature,
)

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
SECRET_PARTS = {"rsa": (Attribute.PRIVATE_EXPONENT, Attribute.PRIME_1), "ec": (Attribute.VALUE,)}


def _assert_secret_parts_unreadable(connection: HsmConnection, label: str, kind: str) -> None:
    with connection.admin_session() as session:
        private = session.get_key(label=label, object_class=ObjectClass.PRIVATE_KEY)
        for attribute in SECRET_PARTS[kind]:
            assert_unreadable(private, attribute)


@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_generated_ca_key_is_sensitive_and_never_extractable(
    make_ca: Callable[[str, int], CertificateAuthority], hsm_connection: HsmConnection,
    ca_type: tuple[str, int],
) -> None:
    ca = make_ca(*ca_type)
    label = ca.signer.key_label
    assert key_attributes(hsm_connection, label) == {
        "sensitive": True, "extractable": False, "always_sensitive": True,
        "never_extractable": True,
    }
    _assert_secret_parts_unreadable(hsm_connection, label, ca_type[0])
    # The public half in the token is the CA certificate's public key.
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    assert read_public_key(hsm_connection, label).dump() == ca_cert.public_key().public_bytes(
        *SPKI)


@pytest.mark.parametrize("key_kind", ["ec256", "ec384", "rsa2048"])
def test_imported_ca_key_is_protected_and_signs(
    hsm_connection: HsmConnection, hsm_config: HsmConfig, tmp_path: Path, key_kind: str,
    hsm_backend: str,
) -> None:
    software: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if key_kind == "rsa2048":
        software = rsa.generate_private_key(65537, 2048)
    else:
        software = ec.generate_private_key(ec.SECP256R1() if key_kind == "ec256"
                                           else ec.SECP384R1())
    key_pem = software.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.TraditionalOpenSSL,
                                     serialization.NoEncryption())
    label = f"imported-{key_kind}-{uuid.uuid4().hex[:8]}"

    if hsm_backend == "tpm2":
        # tpm2-pkcs11 creates no private key objects from values (C_CreateObject: "Can only
        # create RSA Public key objects or data objects"); keys enter a TPM by tpm2_ptool
        # import. The import must then stop with one line that says so, not a bare error.
        with pytest.raises(MissingCapability, match="C_CreateObject with CKO_PRIVATE_KEY"):
            import_ca_key(hsm_connection, label, key_pem)
        return
    public = import_ca_key(hsm_connection, label, key_pem)

    assert public.dump() == software.public_key().public_bytes(*SPKI)
    attributes = key_attributes(hsm_connection, label)
    assert attributes["sensitive"] is True
    assert attributes["extractable"] is False
    kind = "rsa" if key_kind.startswith("rsa") else "ec"
    _assert_secret_parts_unreadable(hsm_connection, label, kind)
    with pytest.raises(HsmError, match=label):
        import_ca_key(hsm_connection, label, key_pem)  # a label is imported once

    # A self-signed CA certificate made with the key in the token verifies with the software
    # key's public half, and openssl accepts it as a CA.
    ca_der = self_signed_ca(CaSigner.for_public_key(hsm_connection, label, public), public,
                            f"Imported {key_kind}")
    ca_cert = x509.load_der_x509_certificate(ca_der)
    verify_signature(software.public_key(), ca_cert.signature, ca_cert.tbs_certificate_bytes,
                     ca_cert.signature_hash_algorithm)
    ca_file = tmp_path / "imported-ca.pem"
    ca_file.write_text(pem(ca_der, "CERTIFICATE"))
    self_check = openssl("verify", "-CAfile", str(ca_file), str(ca_file))
    assert self_check.returncode == 0, self_check.stderr

    # The imported key issues client certificates that verify.
    authority = CertificateAuthority(
        AuthorityConfig(hsm=hsm_config, ca_certificate_path=str(ca_file), ca_key_label=label),
        connection=hsm_connection,
    )
    issued = authority.issue("thing-imported", generate_client_key("ec", 256),
                             timedelta(hours=1))
    cert_file = tmp_path / "client.pem"
    cert_file.write_text(issued.certificate_pem)
    verified = openssl_verify_client(ca_file, cert_file)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    verify_signature(software.public_key(), cert.signature, cert.tbs_certificate_bytes,
                     cert.signature_hash_algorithm)


def test_import_refuses_curves_outside_the_spec(hsm_connection: HsmConnection) -> None:
    key_pem = ec.generate_private_key(ec.SECP521R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    with pytest.raises(ValueError, match="curve"):
        import_ca_key(hsm_connection, f"p521-{uuid.uuid4().hex[:8]}", key_pem)
