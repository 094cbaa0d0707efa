"""A 503 means nothing changed (SPEC 3): when the CRL listing a revocation cannot be signed,
the revocation is not committed. The CA key is destroyed in the (real) token after issuing, so
every signature fails from then on, as with an HSM that lost the key or went away mid-request."""

import secrets
from dataclasses import replace
from pathlib import Path

from pkcs11 import ObjectClass
from sqlalchemy import func, select

from hsm.authority import AuthorityConfig, CertificateAuthority
from hsm.ca_certificate import create_ca
from hsm.connection import HsmConfig, HsmConnection
from repository.schema import revoked_certs
from server.http.app import create_app
from tests.http.conftest import _build_components, serving


async def test_a_revocation_whose_crl_cannot_be_signed_is_not_committed(
    hsm_config: HsmConfig, identity, tmp_path: Path,
) -> None:
    config = replace(hsm_config, pool_size=2, wait_seconds=1.0)
    connection = HsmConnection(config)
    label = f"ca-doomed-{secrets.token_hex(4)}"
    path = create_ca(connection, label, "ec", 256, "Doomed CA", tmp_path / "doomed.pem")
    authority = CertificateAuthority(
        AuthorityConfig(hsm=config, ca_certificate_path=str(path), ca_key_label=label),
        connection=connection)
    built = _build_components(f"sqlite:///{tmp_path / 'certs.db'}", authority, identity,
                              tmp_path)
    bearer = {"Authorization": f"Bearer {identity.alice.token}"}
    try:
        async with serving(create_app(components=built)) as client:
            issued = await client.post("/certs", headers=bearer, json={
                "thing_id": identity.thing_a1.id, "key_type": "ec", "ttl": "1h"})
            assert issued.status_code == 201, issued.text
            serial = issued.json()["serial"]
            assert (await client.get("/crl")).status_code == 200  # a first CRL, signed

            with connection.admin_session() as session:
                session.get_key(label=label, object_class=ObjectClass.PRIVATE_KEY).destroy()

            revoked = await client.delete(f"/certs/{serial}", headers=bearer)
            assert revoked.status_code == 503, revoked.text
            assert revoked.json() == {"error": "signing service unavailable"}
            # Nothing changed: still active, viewable, not recorded as revoked, not in the CRL.
            assert built.store.get(serial).serial == serial
            view = await client.get(f"/certs/{serial}", headers=bearer)
            assert view.status_code == 200, view.text
            with built.store.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(revoked_certs)).scalar() == 0
            assert built.store.crl_state().revocation_seq == 0
            crl = await client.get("/crl")
            assert crl.status_code == 200  # the last signed CRL is still served
            again = await client.delete(f"/certs/{serial}", headers=bearer)
            assert again.status_code == 503  # a retry finds it unchanged, not 404
    finally:
        built.service.close()
        await built.things.close()
        connection.close()
