"""The self-signed CA certificate for a key that lives in the token."""

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import algos, keys, x509

from hsm.ca_key import CaSigner, generate_ca_key
from hsm.certificate import CLOCK_SKEW, new_serial
from hsm.connection import HsmConnection
from hsm.der import pem


def self_signed_ca(
    signer: CaSigner,
    public_key: keys.PublicKeyInfo,
    common_name: str,
    organization: str = "Mainflux",
    days: int = 3650,
) -> bytes:
    """A DER CA certificate for ``public_key``, signed by its own private key in the token."""
    now = datetime.now(UTC).replace(microsecond=0)
    name = x509.Name.build({"common_name": common_name, "organization_name": organization})
    key_id = hashlib.sha1(public_key["public_key"].contents[1:]).digest()
    algorithm = algos.SignedDigestAlgorithm.load(signer.scheme.algorithm_identifier)
    tbs = x509.TbsCertificate({
        "version": "v3",
        "serial_number": new_serial(),
        "signature": algorithm,
        "issuer": name,
        "validity": {
            "not_before": x509.Time(name="utc_time", value=now - CLOCK_SKEW),
            "not_after": _time(now + timedelta(days=days)),
        },
        "subject": name,
        "subject_public_key_info": public_key,
        "extensions": [
            {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": True}},
            {"extn_id": "key_usage", "critical": True,
             "extn_value": {"key_cert_sign", "crl_sign", "digital_signature"}},
            {"extn_id": "key_identifier", "critical": False, "extn_value": key_id},
            {"extn_id": "authority_key_identifier", "critical": False,
             "extn_value": {"key_identifier": key_id}},
        ],
    })
    tbs_der = tbs.dump()
    certificate = x509.Certificate({
        "tbs_certificate": tbs,
        "signature_algorithm": algorithm,
        "signature_value": signer.sign(tbs_der),
    })
    return certificate.dump()


def _time(moment: datetime) -> x509.Time:
    if moment.year < 2050:
        return x509.Time(name="utc_time", value=moment)
    return x509.Time(name="general_time", value=moment)


def create_ca(
    connection: HsmConnection,
    label: str,
    key_type: str,
    bits: int,
    common_name: str,
    certificate_path: Path,
    days: int = 3650,
) -> Path:
    """Generate a CA key labelled ``label`` in the token and write its self-signed certificate
    (PEM) to ``certificate_path``; the one way a CA is made (CLI, tests and benches)."""
    public = generate_ca_key(connection, label, key_type, bits)
    signer = CaSigner.for_public_key(connection, label, public)
    certificate_path.parent.mkdir(parents=True, exist_ok=True)
    certificate_path.write_text(
        pem(self_signed_ca(signer, public, common_name, days=days), "CERTIFICATE"))
    return certificate_path
