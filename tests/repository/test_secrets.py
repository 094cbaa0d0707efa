"""A database dump alone reveals no private key: every column and the raw storage are searched."""

import json
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from repository import NewEvent, Store
from tests.repository.helpers import key_der, make_cert


def _needles(private_key_pem: str) -> list[bytes]:
    """Byte strings any clear copy of the key would contain, in the encodings a dump uses."""
    der = key_der(private_key_pem)
    lines = private_key_pem.strip().splitlines()
    assert len(lines) >= 4
    return [
        lines[1].encode(),  # whole lines of the PEM body (pg_dump escapes the newlines)
        lines[2].encode(),
        der[8:72],  # raw DER (the key's octets, past the header)
        der[8:72].hex().encode(),  # bytea as hex (pg_dump, psql)
    ]


def _every_value(store: Store) -> bytes:
    """SELECT * of every table, each value rendered as bytes (BLOBs raw, others as text)."""
    out = bytearray()
    with store.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        out += bytes(value) + b"\n" + bytes(value).hex().encode() + b"\n"
                    else:
                        out += str(value).encode() + b"\n"
    return bytes(out)


def test_no_private_key_in_the_clear(
    store: Store, migrated_url: str, request: pytest.FixtureRequest
) -> None:
    issued = [make_cert(f"thing-{i}") for i in range(6)]
    for cert in issued:
        store.save(cert)
    # A rotation whose event carries the new key (as the rotation event does).
    rotated = make_cert("thing-0")
    payload = json.dumps({"client_key": rotated.private_key_pem}).encode()
    store.replace(issued[0].serial, rotated,
                  event=NewEvent("things.thing-0.commands.cert-rotation", payload))
    store.append_event(NewEvent("things.thing-1.commands.cert-rotation", payload))
    store.mark_downloaded(issued[1].serial, "thing-1")
    store.revoke(issued[2].serial)
    keys = [c.private_key_pem for c in [*issued, rotated] if c.private_key_pem]

    # The keys are there, sealed: the store can still open the ones it must keep.
    assert store.get(issued[3].serial, with_key=True).private_key_pem == issued[3].private_key_pem
    assert store.get(rotated.serial, with_key=True).private_key_pem == rotated.private_key_pem

    dumps = {"select": _every_value(store)}
    url = make_url(migrated_url)
    if url.get_backend_name() == "sqlite":
        store.engine.dispose()
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(f"{url.database}{suffix}")
            if path.exists():
                dumps[f"file{suffix}"] = path.read_bytes()
        assert len(dumps["file"]) > 0
    else:
        cluster = request.getfixturevalue("postgres_server")
        dumps["pg_dump"] = cluster.pg_dump(url.database)
        assert b"COPY public.certs" in dumps["pg_dump"]
    assert issued[3].certificate_pem.encode() in dumps["select"]  # the search does see data

    for name, blob in dumps.items():
        for key in keys:
            for needle in _needles(key):
                assert needle not in blob, f"private key material found in {name}"
