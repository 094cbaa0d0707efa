"""Every method of the async client against the real service."""

import asyncio
from pathlib import Path

import pytest
from certs_sdk import AsyncCertsClient, Forbidden, NotFound
from cryptography import x509

from tests.fixtures.identity import IdentityFixture
from tests.sdk.checks import assert_key_matches, assert_openssl_verifies


async def test_every_route(async_client: AsyncCertsClient, identity: IdentityFixture,
                           ca_pem: str, tmp_path: Path) -> None:
    sdk = async_client
    a1 = identity.thing_a1
    issued = await sdk.issue(a1.id, key_type="ecdsa", key_bits=256, ttl="1h30m")
    assert (issued.key_type, issued.key_bits, issued.thing_id) == ("ec", 256, a1.id)
    assert_key_matches(issued)
    assert_openssl_verifies(issued.certificate, ca_pem, tmp_path)

    viewed = await sdk.view(issued.serial)
    assert (viewed.serial, viewed.private_key, viewed.downloaded) == (issued.serial, None, False)

    serials = await sdk.list_serials(a1.id, serial=issued.serial)
    assert serials.serials == (issued.serial,) and serials.total == 1
    certs = await sdk.list_certs(a1.id, serial=issued.serial)
    assert [c.certificate for c in certs.certs] == [issued.certificate]

    downloaded = await sdk.download(issued.serial, a1.key)
    assert downloaded.private_key == issued.private_key and downloaded.downloaded
    with pytest.raises(Forbidden):
        await sdk.download(issued.serial, a1.key)

    renewed = await sdk.renew(issued.serial)
    assert renewed.serial != issued.serial and renewed.key_bits == 256
    assert_key_matches(renewed)
    rotated = await sdk.rotate(renewed.serial, a1.id, key_type="ec", key_bits=384)
    assert rotated.key_bits == 384
    assert_key_matches(rotated)
    revocation = await sdk.revoke(rotated.serial)
    assert revocation.serial == rotated.serial
    with pytest.raises(NotFound):
        await sdk.view(rotated.serial)

    crl = x509.load_der_x509_crl(await sdk.crl_der())
    assert {issued.serial, renewed.serial, rotated.serial} <= {
        format(entry.serial_number, "x") for entry in crl}
    assert x509.load_pem_x509_crl((await sdk.crl_pem()).encode()).issuer == crl.issuer
    health = await sdk.health()
    assert health.ok and health.status == "pass"


async def test_concurrent_issues_on_one_client(async_client: AsyncCertsClient,
                                               identity: IdentityFixture) -> None:
    results = await asyncio.gather(*(async_client.issue(identity.thing_a2.id, key_type="ec")
                                     for _ in range(8)))
    assert len({cert.serial for cert in results}) == 8
    for cert in results:
        assert_key_matches(cert)
