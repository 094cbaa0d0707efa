"""What the document promises on the wire of a real ``certs serve``: the CA chain on its own,
`Cache-Control: no-store` on every answer with a private key, and the CRL's validators (ETag =
its CRL number, Last-Modified = thisUpdate, 304 for a matching If-None-Match/If-Modified-Since).
Checked against the CA file and with pyca/cryptography and openssl as second readers."""

import subprocess
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served


def _user(identity: IdentityFixture) -> dict[str, str]:
    return {"Authorization": f"Bearer {identity.alice.token}"}


def _issue(base_url: str, identity: IdentityFixture, **fields: Any) -> httpx.Response:
    body = {"thing_id": identity.things["thing-a1"].id, "key_type": "ec", **fields}
    return httpx.post(f"{base_url}/certs", json=body, headers=_user(identity), timeout=30)


def test_ca_chain_is_the_signing_ca(base_url: str, served: Served, tmp_path: Path) -> None:
    expected = x509.load_pem_x509_certificates(served.signing_ca.read_bytes())
    for path in ("/ca", "/ca.pem"):
        response = httpx.get(f"{base_url}{path}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-pem-file")
        assert x509.load_pem_x509_certificates(response.content) == expected
        assert httpx.head(f"{base_url}{path}").headers["content-length"] == str(
            len(response.content))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(httpx.get(f"{base_url}/ca").content)
    shown = subprocess.run(["openssl", "x509", "-in", str(chain), "-noout", "-subject"],
                           capture_output=True, text=True, check=True)
    assert expected[0].subject.rfc4514_string().split(",")[0].split("=")[1] in shown.stdout


def test_private_keys_are_never_cached(base_url: str, identity: IdentityFixture) -> None:
    issued = _issue(base_url, identity, ttl="2h")
    assert issued.status_code == 201, issued.text
    assert issued.headers["cache-control"] == "no-store"
    serial = issued.json()["serial"]
    renewed = httpx.put(f"{base_url}/certs/{serial}", headers=_user(identity), timeout=30)
    assert renewed.status_code == 201, renewed.text
    assert renewed.headers["cache-control"] == "no-store"
    serial = renewed.json()["serial"]
    rotated = httpx.post(f"{base_url}/certs/{serial}/rotate", headers=_user(identity),
                         json={"thing_id": identity.things["thing-a1"].id}, timeout=30)
    assert rotated.status_code == 201, rotated.text
    assert rotated.headers["cache-control"] == "no-store"
    serial = rotated.json()["serial"]
    key = identity.things["thing-a1"].key
    download = httpx.get(f"{base_url}/certs/{serial}/download",
                         headers={"Authorization": f"Thing {key}"})
    assert download.status_code == 200, download.text
    assert download.json()["private_key"].startswith("-----BEGIN")
    assert download.headers["cache-control"] == "no-store"
    viewed = httpx.get(f"{base_url}/certs/{serial}", headers=_user(identity))
    assert "private_key" not in viewed.json()
    assert "no-store" not in viewed.headers.get("cache-control", "")


def _crl_number(der: bytes) -> int:
    crl = x509.load_der_x509_crl(der)
    number: int = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    return number


def test_crl_validators_and_not_modified(base_url: str, identity: IdentityFixture) -> None:
    first = httpx.get(f"{base_url}/crl")
    assert first.status_code == 200
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    crl = x509.load_der_x509_crl(first.content)
    assert etag == f'"{_crl_number(first.content)}"'
    assert parsedate_to_datetime(modified) == crl.last_update_utc.replace(microsecond=0)
    pem = httpx.get(f"{base_url}/crl.pem")
    assert pem.headers["etag"] == etag
    assert x509.load_pem_x509_crl(pem.content).public_bytes(Encoding.DER) == first.content

    for path in ("/crl", "/crl.pem"):
        for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"0", W/{etag}'},
                        {"If-None-Match": "*"}, {"If-Modified-Since": modified}):
            cached = httpx.get(f"{base_url}{path}", headers=headers)
            assert cached.status_code == 304, (path, headers)
            assert cached.content == b""
            assert cached.headers["etag"] == etag
        for headers in ({"If-None-Match": '"0"'}, {"If-Modified-Since": format_datetime(
                parsedate_to_datetime(modified).replace(year=2000), usegmt=True)},
                        {"If-Modified-Since": "not a date"}):
            assert httpx.get(f"{base_url}{path}", headers=headers).status_code == 200
        # If-None-Match decides over If-Modified-Since (RFC 9110).
        both = {"If-None-Match": '"0"', "If-Modified-Since": modified}
        assert httpx.get(f"{base_url}{path}", headers=both).status_code == 200

    issued = _issue(base_url, identity, ttl="1h").json()
    revoked = httpx.delete(f"{base_url}/certs/{issued['serial']}", headers=_user(identity))
    assert revoked.status_code == 200
    after = httpx.get(f"{base_url}/crl", headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert _crl_number(after.content) > _crl_number(first.content)
    assert after.headers["etag"] == f'"{_crl_number(after.content)}"'
    listed = {entry.serial_number for entry in x509.load_der_x509_crl(after.content)}
    assert int(issued["serial"], 16) in listed
