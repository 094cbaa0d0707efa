"""GET /certs/{serial} (view body) and DELETE /certs/{serial} (revocation and the CRL)."""

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text

from repository import create_engine_for
from tests.http.conftest import RFC3339_Z, VIEW_FIELDS, parse_time


async def test_view_body(api):
    issued = await api.issue(ttl="300h", key_bits=384)
    response = await api.view(issued["serial"])
    assert response.status_code == 200, response.text
    view = response.json()
    assert set(view) == VIEW_FIELDS, sorted(view)
    assert "private_key" not in view
    for field in ("serial", "thing_id", "certificate", "issuing_ca", "ca_chain",
                  "private_key_type", "key_bits", "expires_at"):
        assert view[field] == issued[field], field
    assert view["key_type"] == view["private_key_type"] == "ec"
    assert view["key_bits"] == 384
    assert view["downloaded"] is False
    assert RFC3339_Z.match(view["expires_at"])


async def test_view_accepts_upper_case_serial(api):
    issued = await api.issue(ttl="1h")
    response = await api.view(issued["serial"].upper())
    assert response.status_code == 200, response.text
    assert response.json()["serial"] == issued["serial"]


async def test_view_of_another_things_certificate_is_independent(api):
    """Two things, two certificates: each view shows its own record."""
    first = await api.issue(thing="thing-a1", ttl="1h")
    second = await api.issue(thing="thing-a2", ttl="2h")
    one, two = (await api.view(first["serial"])).json(), (await api.view(second["serial"])).json()
    assert one["thing_id"] == api.thing_id("thing-a1")
    assert two["thing_id"] == api.thing_id("thing-a2")
    assert one["certificate"] == first["certificate"]
    assert two["certificate"] == second["certificate"]


def _stored_key(api, serial: str):
    """(client_key, private_key_enc) of the serial's row in the certs table."""
    engine = create_engine_for(api.components.service.settings.db_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT client_key, private_key_enc FROM certs WHERE serial = :serial"),
                {"serial": serial}).first()
    finally:
        engine.dispose()
    return (None, None) if row is None else (row[0], row[1])


async def test_revoke(api):
    issued = await api.issue(ttl="10h")
    other = await api.issue(ttl="10h")
    crl_before = await api.crl()
    assert issued["serial"] not in {format(e.serial_number, "x") for e in crl_before}
    ok = api.openssl_verify(issued["certificate"],
                            crl_before.public_bytes(Encoding.PEM)
                            .decode())
    assert ok.returncode == 0, ok.stdout + ok.stderr

    started = datetime.now(UTC).replace(microsecond=0)
    response = await api.client.delete(f"/certs/{issued['serial']}", headers=api.auth("alice"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"revocation_time", "RevocationTime"}
    assert body["revocation_time"] == body["RevocationTime"]
    assert RFC3339_Z.match(body["revocation_time"]), body
    revoked_at = parse_time(body["revocation_time"])
    assert started <= revoked_at <= datetime.now(UTC)

    # in the CRL as soon as the DELETE has returned
    crl = await api.crl()
    entry = crl.get_revoked_certificate_by_serial_number(int(issued["serial"], 16))
    assert entry is not None
    assert abs(entry.revocation_date_utc - revoked_at) <= timedelta(seconds=1)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > \
        crl_before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl.get_revoked_certificate_by_serial_number(int(other["serial"], 16)) is None

    # a second implementation agrees: openssl verifies the CRL and rejects the certificate
    crl_pem = crl.public_bytes(Encoding.PEM).decode()
    checked = api.openssl("crl", "-in", api.write("crl.pem", crl_pem), "-CAfile",
                          api.write("ca.pem", api.ca_pem), "-noout")
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr
    rejected = api.openssl_verify(issued["certificate"], crl_pem)
    assert rejected.returncode != 0
    assert "revoked" in (rejected.stdout + rejected.stderr).lower()
    still_good = api.openssl_verify(other["certificate"], crl_pem)
    assert still_good.returncode == 0, still_good.stdout + still_good.stderr

    # its stored private key is destroyed (and was never stored in the clear)
    assert _stored_key(api, issued["serial"]) == (None, None)
    assert _stored_key(api, other["serial"])[0] is None
    assert _stored_key(api, other["serial"])[1]

    # the certificate has left the active set
    gone = await api.view(issued["serial"])
    assert (gone.status_code, gone.json()) == (404, {"error": "entity not found"})
    again = await api.client.delete(f"/certs/{issued['serial']}", headers=api.auth("alice"))
    assert (again.status_code, again.json()) == (404, {"error": "failed to revoke certificate"})
    listed = await api.client.get(f"/things/{api.thing_id('thing-a1')}/serials",
                                  headers=api.auth("alice"))
    assert listed.json()["serials"] == [other["serial"]]
    assert (await api.view(other["serial"])).status_code == 200


async def test_revoke_accepts_upper_case_serial(sqlite_api):
    issued = await sqlite_api.issue(ttl="1h")
    response = await sqlite_api.client.delete(f"/certs/{issued['serial'].upper()}",
                                              headers=sqlite_api.auth("alice"))
    assert response.status_code == 200, response.text
    assert issued["serial"] in await sqlite_api.crl_serials()


async def test_revoked_key_cannot_be_downloaded(sqlite_api):
    issued = await sqlite_api.issue(ttl="1h")
    response = await sqlite_api.client.delete(f"/certs/{issued['serial']}",
                                              headers=sqlite_api.auth("alice"))
    assert response.status_code == 200
    thing = sqlite_api.identity.thing_a1
    download = await sqlite_api.download(issued["serial"], thing.key)
    assert (download.status_code, download.json()) == (404, {"error": "entity not found"})


async def test_crl_der_and_pem(sqlite_api):
    issued = await sqlite_api.issue(ttl="1h")
    await sqlite_api.client.delete(f"/certs/{issued['serial']}", headers=sqlite_api.auth("alice"))
    der = await sqlite_api.client.get("/crl")
    assert der.status_code == 200
    assert der.headers["content-type"].split(";")[0] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(der.content)
    assert crl.is_signature_valid(sqlite_api.ca.public_key())
    assert crl.next_update_utc - crl.last_update_utc == timedelta(hours=24)
    assert abs(crl.last_update_utc - datetime.now(UTC)) < timedelta(minutes=2)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = sqlite_api.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    verified = sqlite_api.openssl("crl", "-inform", "DER", "-in",
                                  sqlite_api.write("crl.der", der.content),
                                  "-CAfile", sqlite_api.write("ca.pem", sqlite_api.ca_pem),
                                  "-noout")
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stdout + verified.stderr

    pem = await sqlite_api.client.get("/crl.pem")
    assert pem.status_code == 200
    assert pem.text.startswith("-----BEGIN X509 CRL-----")
    from_pem = x509.load_pem_x509_crl(pem.content)
    assert from_pem.is_signature_valid(sqlite_api.ca.public_key())
    assert from_pem.get_revoked_certificate_by_serial_number(int(issued["serial"], 16))
    assert from_pem.public_bytes(Encoding.DER) == der.content
