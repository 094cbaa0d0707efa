"""Migrations: empty database up and down, and a database the Go service made, imported."""

import secrets
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url

from repository import (
    HEAD,
    AlreadyDownloaded,
    NotFound,
    Store,
    create_engine_for,
    current_revision,
    downgrade,
    migrate,
)
from repository.schema import certs
from tests.fixtures.postgres import PostgresCluster
from tests.repository.helpers import SoftwareSealer, make_cert

OUR_TABLES = {"certs", "revoked_certs", "crl_state", "outbox"}
GO_CERTS_COLUMNS = {"thing_id", "serial", "expires_at", "client_cert", "client_key",
                    "issuing_ca", "ca_chain", "private_key_type", "created_at", "key_bits",
                    "downloaded"}


def _tables(url: str) -> dict[str, set[str]]:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            return {t: {c["name"] for c in found.get_columns(t)} for t in found.get_table_names()}
    finally:
        engine.dispose()


def test_empty_database_up_to_head_and_down_to_base(db_url: str) -> None:
    assert current_revision(db_url) is None
    migrate(db_url)
    assert current_revision(db_url) == HEAD
    tables = _tables(db_url)
    assert OUR_TABLES <= set(tables)
    assert {"private_key_enc", "revoked_at", "lease_owner", "serial_base"} <= tables["certs"]

    migrate(db_url)  # idempotent
    assert current_revision(db_url) == HEAD

    downgrade(db_url, "0001")  # back to exactly the Go service's layout
    tables = _tables(db_url)
    assert tables["certs"] == GO_CERTS_COLUMNS
    assert tables["revoked_certs"] == {"thing_id", "serial", "revoked_at"}
    assert "outbox" not in tables and "crl_state" not in tables

    downgrade(db_url, "base")
    assert current_revision(db_url) is None
    assert set(_tables(db_url)) <= {"alembic_version"}

    migrate(db_url)  # and up again, usable
    engine = create_engine_for(db_url)
    store = Store(engine, SoftwareSealer())
    saved = store.save(make_cert())
    assert store.get(saved.serial).serial == saved.serial
    engine.dispose()


def test_a_round_trip_through_the_go_layout_keeps_active_certificates(db_url: str) -> None:
    migrate(db_url)
    engine = create_engine_for(db_url)
    store = Store(engine, SoftwareSealer())
    thing = str(uuid.uuid4())
    kept = store.save(make_cert(thing))
    revoked = store.save(make_cert(thing))
    store.revoke(revoked.serial)
    engine.dispose()

    downgrade(db_url, "0001")
    migrate(db_url)
    engine = create_engine_for(db_url)
    store = Store(engine, SoftwareSealer())
    got = store.get(kept.serial)
    assert got.certificate_pem == kept.certificate_pem and got.thing_id == thing
    assert got.private_key_pem is None  # a sealed key cannot survive the Go layout
    with pytest.raises(NotFound):
        store.get(revoked.serial)
    assert [e.serial for e in store.crl_entries()] == [revoked.serial]
    engine.dispose()


# The Go service's schema (MainfluxLabs/mainflux certs/postgres/init.go, certs_1 and certs_2,
# and the downloaded column its repository uses), as it would be found in production.
GO_CERTS_1 = [
    """CREATE TABLE IF NOT EXISTS certs (
        thing_id         UUID NOT NULL,
        serial           VARCHAR(64) NOT NULL UNIQUE,
        expires_at       TIMESTAMPTZ NOT NULL,
        client_cert      TEXT NOT NULL,
        client_key       TEXT NOT NULL,
        issuing_ca       TEXT NOT NULL,
        ca_chain         TEXT[],
        private_key_type TEXT NOT NULL,
        created_at       TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        PRIMARY KEY      (thing_id, serial))""",
    "CREATE INDEX idx_certs_serial ON certs(serial)",
    "CREATE INDEX idx_certs_expires_at ON certs(expires_at)",
    """CREATE TABLE IF NOT EXISTS revoked_certs (
        thing_id         UUID NOT NULL,
        serial           VARCHAR(64) NOT NULL UNIQUE,
        revoked_at       TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    "CREATE INDEX idx_revoked_certs_thing_id ON revoked_certs(thing_id)",
    "CREATE INDEX idx_revoked_certs_revoked_at ON revoked_certs(revoked_at)",
    "CREATE TABLE gorp_migrations (id text PRIMARY KEY, applied_at timestamptz)",
    "INSERT INTO gorp_migrations VALUES ('certs_1', now())",
]
GO_LATER = [
    "ALTER TABLE certs ADD COLUMN IF NOT EXISTS key_bits INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE certs ADD COLUMN IF NOT EXISTS downloaded BOOLEAN NOT NULL DEFAULT FALSE",
    "INSERT INTO gorp_migrations VALUES ('certs_2', now())",
]


@pytest.mark.parametrize("go_version", ["certs_1", "latest"])
def test_go_database_migrates_and_stays_readable(
    postgres_server: PostgresCluster, postgres_url: str, go_version: str
) -> None:
    things = [str(uuid.uuid4()) for _ in range(2)]
    now = datetime.now(UTC).replace(microsecond=0)
    go_certs = []
    for i in range(3):
        # Go's serials: up to 128 random bits, stored as big.Int.String() (decimal).
        number = secrets.randbits(128) | (1 << 127)
        made = make_cert(things[i % 2], serial=format(number, "x"),
                         expires_at=now + timedelta(days=10 + i))
        go_certs.append((things[i % 2], str(number), made))
    revoked_serials = ["302182752101398912367127823405934591001", "17"]

    with psycopg.connect(postgres_server.dsn(make_url(postgres_url).database or ""),
                         autocommit=True) as conn:
        for statement in GO_CERTS_1 + (GO_LATER if go_version == "latest" else []):
            conn.execute(statement)
        columns = "thing_id, serial, expires_at, client_cert, client_key, issuing_ca, ca_chain," \
                  " private_key_type"
        for thing, decimal, made in go_certs:
            conn.execute(
                f"INSERT INTO certs ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (thing, decimal, made.expires_at, made.certificate_pem, made.private_key_pem,
                 "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
                 ["-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"], "ec"))
        if go_version == "latest":
            conn.execute("UPDATE certs SET key_bits = 256, downloaded = (serial = %s)",
                         (go_certs[2][1],))
        for serial in revoked_serials:
            conn.execute("INSERT INTO revoked_certs (thing_id, serial, revoked_at)"
                         " VALUES (%s, %s, %s)", (things[0], serial, now - timedelta(days=1)))

    migrate(postgres_url)
    assert current_revision(postgres_url) == HEAD
    engine = create_engine_for(postgres_url)
    store = Store(engine, SoftwareSealer())

    thing, decimal, made = go_certs[0]
    got = store.get(decimal, with_key=True)
    assert (got.serial, got.thing_id, got.certificate_pem) == (decimal, thing, made.certificate_pem)
    assert got.private_key_pem == made.private_key_pem  # the Go plaintext key, still usable
    assert got.expires_at == made.expires_at and got.expires_at.tzinfo is not None
    assert got.issuing_ca is not None and got.ca_chain == (got.issuing_ca,)
    assert got.key_bits == (256 if go_version == "latest" else 0)
    page = store.list_by_thing(things[0])
    assert page.total == 2 and [c.serial for c in page.items] == [go_certs[0][1], go_certs[2][1]]

    entries = store.crl_entries()
    assert [e.serial_number for e in entries] == [int(s) for s in sorted(revoked_serials)]
    assert all(e.expires_at is None for e in entries)  # Go did not record it: kept on the CRL
    assert store.crl_state().revocation_seq == 2

    # The plaintext keys are sealed on request; afterwards no clear key is left anywhere.
    assert store.seal_legacy_keys(batch=2) == 3
    assert store.seal_legacy_keys() == 0
    with engine.connect() as conn:
        assert conn.execute(select(certs.c.client_key).where(
            certs.c.client_key.is_not(None))).all() == []
    dump = postgres_server.pg_dump(make_url(postgres_url).database or "")
    for _, _, cert in go_certs:
        assert cert.private_key_pem is not None
        assert cert.private_key_pem.splitlines()[1].encode() not in dump
    assert store.get(decimal, with_key=True).private_key_pem == made.private_key_pem

    if go_version == "latest":
        with pytest.raises(AlreadyDownloaded):
            store.mark_downloaded(go_certs[2][1], things[0])
    downloaded = store.mark_downloaded(go_certs[1][1], things[1])
    assert downloaded.private_key_pem == go_certs[1][2].private_key_pem

    revocation = store.revoke(decimal)
    assert revocation.seq == 3
    assert store.crl_entries(after_seq=2)[0].serial_number == int(decimal)
    engine.dispose()

    downgrade(postgres_url, "0001")
    assert _tables(postgres_url)["certs"] == GO_CERTS_COLUMNS
