"""Device-held keys (SPEC 3): POST /certs and rotate with a `csr`, renew and download of such
certificates. CSRs come from `openssl req` and from `cryptography`; certificates are checked
with openssl and cryptography."""

import base64
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from repository.schema import certs
from tests.http.conftest import spki

KEYS = [("rsa", 2048), ("rsa", 3072), ("rsa", 4096), ("ec", 256), ("ec", 384), ("ec", 521)]
CURVES = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1(), 224: ec.SECP224R1()}


def _key(key_type: str, bits: int) -> Any:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(CURVES[bits])


def _csr(key: Any, subject: str = "device-chosen-name") -> str:
    """A CSR by cryptography, asking for a subject and an extension the CA must ignore."""
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _openssl_csr(tmp_path: Path, key_type: str, bits: int) -> tuple[str, Path]:
    """A key and a CSR made by `openssl req`, as a device would."""
    key = tmp_path / f"device-{key_type}-{bits}.key"
    if key_type == "rsa":
        algorithm = ["-newkey", f"rsa:{bits}"]
    else:
        curve = {256: "prime256v1", 384: "secp384r1", 521: "secp521r1"}[bits]
        algorithm = ["-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{curve}"]
    made = subprocess.run(["openssl", "req", "-new", *algorithm, "-nodes", "-keyout", str(key),
                           "-subj", "/CN=whatever-the-device-says/O=Elsewhere"],
                          capture_output=True, text=True, timeout=120, check=True)
    return made.stdout, key


def _check_device_certificate(api: Any, body: dict[str, Any], thing: str, public_key: Any,
                              key_type: str, bits: int) -> x509.Certificate:
    assert body["private_key"] == ""
    assert (body["private_key_type"], body["key_bits"]) == (key_type, bits)
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert spki(cert.public_key()) == spki(public_key)
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cn] == [thing] and len(cert.subject) == 1
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    verified = api.openssl_verify(body["certificate"])
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stderr
    return cert


@pytest.mark.parametrize(("key_type", "bits"), KEYS)
async def test_csr_by_openssl_is_certified_with_exactly_its_key(
    sqlite_api, tmp_path: Path, key_type: str, bits: int
) -> None:
    thing = sqlite_api.thing_id("thing-a1")
    csr, key_file = _openssl_csr(tmp_path, key_type, bits)
    body = await sqlite_api.issue(csr=csr, key_type=None)
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    _check_device_certificate(sqlite_api, body, thing, key.public_key(), key_type, bits)


@pytest.mark.parametrize(("key_type", "bits"), KEYS)
async def test_csr_by_cryptography_with_matching_fields(sqlite_api, key_type: str,
                                                        bits: int) -> None:
    thing = sqlite_api.thing_id("thing-a1")
    key = _key(key_type, bits)
    body = await sqlite_api.issue(csr=_csr(key), key_type=key_type, key_bits=bits, ttl="100h")
    cert = _check_device_certificate(sqlite_api, body, thing, key.public_key(), key_type, bits)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(hours=100,
                                                                             seconds=60)


def _tampered(key: Any) -> str:
    """A CSR whose signature no longer matches: one bit of the signature flipped."""
    der = x509.load_pem_x509_csr(_csr(key).encode()).public_bytes(serialization.Encoding.DER)
    broken = der[:-1] + bytes([der[-1] ^ 0x01])
    text = base64.encodebytes(broken).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{text}-----END CERTIFICATE REQUEST-----\n"


@pytest.mark.parametrize(("case", "fields", "message"), [
    ("tampered signature", {"csr": "tampered"}, "invalid csr"),
    ("not PEM", {"csr": "MIIBxyz not a request"}, "invalid csr"),
    ("a certificate, not a request", {"csr": "certificate"}, "invalid csr"),
    ("not a string", {"csr": 42}, "invalid csr"),
    ("RSA 1024", {"csr": ("rsa", 1024)}, "invalid key bits"),
    ("P-224", {"csr": ("ec", 224)}, "invalid key bits"),
    ("Ed25519", {"csr": "ed25519"}, "unsupported key type"),
    ("key_type not matching", {"csr": ("ec", 256), "key_type": "rsa"}, "unsupported key type"),
    ("key_bits not matching", {"csr": ("ec", 256), "key_bits": 384}, "invalid key bits"),
])
async def test_bad_csrs_get_their_400(sqlite_api, case: str, fields: dict[str, Any],
                                      message: str) -> None:
    body: dict[str, Any] = {"thing_id": sqlite_api.thing_id("thing-a1")}
    for name, value in fields.items():
        if name != "csr":
            body[name] = value
        elif isinstance(value, tuple):
            body["csr"] = _csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)
                               if value == ("rsa", 1024) else _key(*value))
        elif value == "tampered":
            body["csr"] = _tampered(_key("ec", 256))
        elif value == "ed25519":
            device = ed25519.Ed25519PrivateKey.generate()
            body["csr"] = x509.CertificateSigningRequestBuilder().subject_name(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d")])).sign(
                device, None).public_bytes(serialization.Encoding.PEM).decode()
        elif value == "certificate":
            body["csr"] = sqlite_api.ca_pem
        else:
            body["csr"] = value
    before = await sqlite_api.client.get(f"/things/{body['thing_id']}/serials?limit=200",
                                         headers=sqlite_api.auth("alice"))
    response = await sqlite_api.client.post("/certs", json=body, headers=sqlite_api.auth("alice"))
    assert (response.status_code, response.json()) == (400, {"error": message}), case
    after = await sqlite_api.client.get(f"/things/{body['thing_id']}/serials?limit=200",
                                        headers=sqlite_api.auth("alice"))
    assert after.json()["total"] == before.json()["total"]  # nothing issued


async def test_device_certificate_stores_no_key_renews_same_key_and_downloads_empty(
    sqlite_api, sqlite_components
) -> None:
    thing = sqlite_api.thing_id("thing-a1")
    key = _key("ec", 256)
    issued = await sqlite_api.issue(csr=_csr(key), key_type=None, ttl="1h")
    with sqlite_components.store.engine.connect() as conn:
        row = conn.execute(select(certs.c.private_key_enc, certs.c.client_key, certs.c.device_key)
                           .where(certs.c.serial == issued["serial"])).one()
    assert (row.private_key_enc, row.client_key, row.device_key) == (None, None, True)

    view = await sqlite_api.view(issued["serial"])
    assert view.status_code == 200 and view.json()["key_type"] == "ec"

    renewed = await sqlite_api.client.put(f"/certs/{issued['serial']}",
                                          headers=sqlite_api.auth("alice"))
    assert renewed.status_code == 201, renewed.text
    body = renewed.json()
    assert body["serial"] != issued["serial"]
    cert = _check_device_certificate(sqlite_api, body, thing, key.public_key(), "ec", 256)
    assert cert.not_valid_after_utc > datetime.now(UTC) + timedelta(minutes=50)
    assert issued["serial"] in await sqlite_api.crl_serials()

    downloaded = await sqlite_api.download(body["serial"],
                                           sqlite_api.identity.things["thing-a1"].key)
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.json()["private_key"] == ""
    assert downloaded.json()["certificate"] == body["certificate"]
    again = await sqlite_api.download(body["serial"], sqlite_api.identity.things["thing-a1"].key)
    assert (again.status_code, again.json()) == (403, {"error": "certificate already downloaded"})


async def test_rotate_with_a_csr_takes_the_new_device_key(sqlite_api) -> None:
    thing = sqlite_api.thing_id("thing-a1")
    old_key, new_key = _key("ec", 256), _key("ec", 384)
    issued = await sqlite_api.issue(csr=_csr(old_key), key_type=None)
    rotated = await sqlite_api.client.post(
        f"/certs/{issued['serial']}/rotate", json={"thing_id": thing, "csr": _csr(new_key)},
        headers=sqlite_api.auth("alice"))
    assert rotated.status_code == 201, rotated.text
    _check_device_certificate(sqlite_api, rotated.json(), thing, new_key.public_key(), "ec", 384)
    assert issued["serial"] in await sqlite_api.crl_serials()
    gone = await sqlite_api.view(issued["serial"])
    assert gone.status_code == 404
