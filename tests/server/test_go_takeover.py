"""Taking over a Go deployment: `certs migrate` seals the plaintext keys the Go service left in
its database, in batches and idempotently, and the devices still download the right key."""

import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from sqlalchemy.engine import make_url

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.serve import ROOT, serve_env, start_serve, stop_serve
from tests.repository.helpers import make_cert
from tests.repository.test_migrations import GO_CERTS_1

COLUMNS = "thing_id, serial, expires_at, client_cert, client_key, issuing_ca, ca_chain, " \
          "private_key_type"


def _certs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_migrate_seals_go_plaintext_keys_and_downloads_return_them(
    tmp_path: Path, identity: IdentityFixture, postgres_server: PostgresCluster,
    postgres_url: str,
) -> None:
    database = make_url(postgres_url).database or ""
    now = datetime.now(UTC).replace(microsecond=0)
    thing = identity.thing_a1
    go_rows = []
    for i in range(3):
        number = secrets.randbits(128) | (1 << 127)  # Go's serials: decimal big.Int strings
        go_rows.append((str(number), make_cert(thing.id, serial=format(number, "x"),
                                               expires_at=now + timedelta(days=10 + i))))
    with psycopg.connect(postgres_server.dsn(database), autocommit=True) as conn:
        for statement in GO_CERTS_1:
            conn.execute(statement)
        for decimal, made in go_rows:
            conn.execute(f"INSERT INTO certs ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                         (thing.id, decimal, made.expires_at, made.certificate_pem,
                          made.private_key_pem, made.certificate_pem, [made.certificate_pem],
                          "ec"))
    env = {**serve_env(tmp_path, identity, workers=1), "MF_CERTS_DB_URL": postgres_url}

    first = _certs(env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "3 plaintext client keys sealed" in first.stdout
    again = _certs(env, "migrate")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "database schema is current"

    dump = postgres_server.pg_dump(database)
    for _, made in go_rows:
        assert made.private_key_pem is not None
        for line in made.private_key_pem.splitlines()[1:-1]:
            assert line.encode() not in dump

    served = start_serve(env, tmp_path)
    try:
        for decimal, made in go_rows:
            response = httpx.get(f"http://127.0.0.1:{served.port}/certs/{decimal}/download",
                                 headers={"Authorization": f"Thing {thing.key}"}, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json()["private_key"] == made.private_key_pem
    finally:
        stop_serve(served.process)
