"""The store's answer to the OCSP responder (SPEC 13) on both backends: active serials are
good, revoked ones carry their time and reason, anything else was never issued here; hex
serials and the decimal ones imported from the Go service are told apart by their base."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, update

from authority.ocsp import cert_status
from repository import RevocationReason, Store, create_engine_for, migrate
from repository.schema import certs, crl_state, revoked_certs
from tests.repository.helpers import SoftwareSealer

NOW = datetime.now(UTC).replace(microsecond=0)
HEX_ACTIVE, HEX_REVOKED = 0x5EED1, 0x5EED2
GO_ACTIVE, GO_REVOKED, GO_IMPORTED_REVOCATION = 987654321, 987654322, 123456789


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    migrate(db_url)
    engine = create_engine_for(db_url)
    rows = [(format(HEX_ACTIVE, "x"), 16), (format(HEX_REVOKED, "x"), 16),
            (str(GO_ACTIVE), 10), (str(GO_REVOKED), 10)]
    with engine.begin() as conn:
        conn.execute(insert(certs), [{
            "serial": serial, "thing_id": "thing", "expires_at": NOW + timedelta(days=1),
            "client_cert": "PEM", "private_key_type": "ec", "key_bits": 256,
            "downloaded": False, "created_at": NOW, "serial_base": base,
        } for serial, base in rows])
        # Go deleted the certificates it revoked: only the revoked_certs row is left.
        conn.execute(insert(revoked_certs), {
            "seq": 1, "serial": str(GO_IMPORTED_REVOCATION), "thing_id": "thing",
            "revoked_at": NOW - timedelta(days=3), "serial_base": 10})
        conn.execute(update(crl_state).values(revocation_seq=1))
    yield Store(engine, SoftwareSealer())
    engine.dispose()


def test_statuses_of_hex_and_go_serials(store: Store) -> None:
    revoked_at = NOW - timedelta(hours=1)
    store.revoke(format(HEX_REVOKED, "x"), reason=RevocationReason.KEY_COMPROMISE,
                 at=revoked_at)
    store.revoke(str(GO_REVOKED), reason=RevocationReason.CESSATION_OF_OPERATION,
                 at=revoked_at)
    # The decimal digits of a Go serial read as hex are another number: not ours.
    lookalike = int(str(GO_ACTIVE), 16)
    asked = [HEX_ACTIVE, HEX_REVOKED, GO_ACTIVE, GO_REVOKED, GO_IMPORTED_REVOCATION,
             lookalike, 0x777, 0, -5, 1 << 300]
    found = {number: cert_status(store.serial_statuses(asked).get(number)) for number in asked}
    assert found[HEX_ACTIVE].state == found[GO_ACTIVE].state == "good"
    assert (found[HEX_REVOKED].state, found[HEX_REVOKED].revoked_at,
            found[HEX_REVOKED].reason) == ("revoked", revoked_at, "key_compromise")
    assert (found[GO_REVOKED].state, found[GO_REVOKED].reason) == (
        "revoked", "cessation_of_operation")
    assert (found[GO_IMPORTED_REVOCATION].state, found[GO_IMPORTED_REVOCATION].revoked_at,
            found[GO_IMPORTED_REVOCATION].reason) == ("revoked", NOW - timedelta(days=3), None)
    for never in (lookalike, 0x777, 0, -5, 1 << 300):
        assert found[never].state == "unknown", never
    assert store.serial_statuses([]) == {}
