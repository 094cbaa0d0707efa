"""The audit trail (SPEC 15) of a real two-worker ``certs serve`` on PostgreSQL: a mixed
concurrent run leaves one intact chain, and ``certs audit verify`` names the record a test
changes, removes or inserts directly in the database."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from repository.audit import AuditRecord
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.serve import ROOT, serve_env, start_serve, stop_serve

COLUMNS = ("seq, at, actor, email, action, thing_id, issued, revoked, downloaded, reason, "
           "client, request_id, prev_hash, hash")


def certs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


async def mixed_run(base: str, identity: IdentityFixture) -> int:
    """Issue, renew, rotate, revoke and download at once from many connections; returns how
    many changes succeeded."""
    alice = {"Authorization": f"Bearer {identity.alice.token}"}
    bob = {"Authorization": f"Bearer {identity.bob.token}"}
    limits = httpx.Limits(max_connections=24, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        async def issue(thing_id: str, who: dict[str, str]) -> str:
            response = await client.post("/certs", headers=who, json={
                "thing_id": thing_id, "key_type": "ec", "ttl": "2h"})
            assert response.status_code == 201, response.text
            return str(response.json()["serial"])

        a1, b1 = identity.thing_a1, identity.thing_b1
        first = await asyncio.gather(*(issue(a1.id, alice) for _ in range(12)),
                                     *(issue(b1.id, bob) for _ in range(6)))
        a_serials, b_serials = first[:12], first[12:]

        async def change(kind: str, serial: str) -> int:
            if kind == "renew":
                response = await client.put(f"/certs/{serial}", headers=alice)
            elif kind == "rotate":
                response = await client.post(f"/certs/{serial}/rotate", headers=alice,
                                             json={"thing_id": a1.id, "key_type": "ec"})
            elif kind == "revoke":
                response = await client.delete(f"/certs/{serial}", headers=bob)
            else:
                response = await client.get(f"/certs/{serial}/download",
                                            headers={"Authorization": f"Thing {a1.key}"})
            assert response.status_code in (200, 201), (kind, response.text)
            return 1

        work = [change("renew", s) for s in a_serials[:3]]
        work += [change("rotate", s) for s in a_serials[3:6]]
        work += [change("download", s) for s in a_serials[6:12]]
        work += [change("revoke", s) for s in b_serials]
        work += [issue(a1.id, alice) for _ in range(8)]  # type: ignore[misc]
        done = await asyncio.gather(*work)
        return len(first) + len(done)


def verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return certs(env, "audit", "verify")


def test_the_chain_holds_under_concurrent_workers_and_names_tampering(
        tmp_path: Path, identity: IdentityFixture, postgres_server: PostgresCluster,
        postgres_url: str) -> None:
    env = {**serve_env(tmp_path, identity, workers=2), "MF_CERTS_DB_URL": postgres_url}
    served = start_serve(env, tmp_path)
    try:
        changes = asyncio.run(mixed_run(f"http://127.0.0.1:{served.port}", identity))
        operator = certs(env, "issue", identity.thing_b1.id, "--key-type", "ec")
        assert operator.returncode == 0, operator.stderr
    finally:
        stop_serve(served.process)
    changes += 1

    checked = verify(env)
    assert checked.returncode == 0, checked.stderr
    assert f"{changes} records" in checked.stdout, checked.stdout

    listed = certs(env, "audit", "list")
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, changes + 1))
    actions = [r["action"] for r in records]
    assert actions.count("issue") == 18 + 8 + 1
    assert (actions.count("renew"), actions.count("rotate")) == (3, 3)
    assert (actions.count("download"), actions.count("revoke")) == (6, 6)
    by_action = {r["action"]: r for r in records}
    assert by_action["renew"]["actor"] == f"user:{identity.alice.id}"
    assert by_action["renew"]["email"] == identity.alice.email
    assert by_action["renew"]["revoked"] and by_action["renew"]["issued"]
    assert by_action["revoke"]["actor"] == f"user:{identity.bob.id}"
    assert by_action["download"]["actor"] == f"thing:{identity.thing_a1.id}"
    assert records[-1]["actor"] == "operator"
    assert all(r["request_id"] and r["client"] == "127.0.0.1" for r in records[:-1])
    only_b1 = certs(env, "audit", "list", "--thing", identity.thing_b1.id)
    assert {json.loads(line)["thing_id"] for line in only_b1.stdout.splitlines()} == {
        identity.thing_b1.id}
    later = certs(env, "audit", "list", "--since", records[-1]["at"])
    assert [json.loads(line)["seq"] for line in later.stdout.splitlines()] == [changes]

    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.dsn(database), autocommit=True) as conn:
        # changed: one field of record 5
        conn.execute("UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 5")
        assert_names(env, "audit record 5 was changed")
        conn.execute("UPDATE audit_log SET actor = %s WHERE seq = 5", (records[4]["actor"],))
        assert verify(env).returncode == 0

        # removed: record 7, then the last one
        for seq in (7, changes):
            row = conn.execute(f"SELECT {COLUMNS} FROM audit_log WHERE seq = %s",
                               (seq,)).fetchone()
            conn.execute("DELETE FROM audit_log WHERE seq = %s", (seq,))
            assert_names(env, f"audit record {seq} was removed")
            conn.execute(f"INSERT INTO audit_log ({COLUMNS}) VALUES "
                         f"({', '.join(['%s'] * 14)})", row)
            assert verify(env).returncode == 0

        # inserted: a well-formed record chained after the last one, head not moved
        head_hash = conn.execute("SELECT hash FROM audit_log WHERE seq = %s",
                                 (changes,)).fetchone()[0]
        forged = AuditRecord(at=records[-1]["at"], actor="operator", action="revoke",
                             thing_id=identity.thing_a1.id, revoked=("abc",),
                             seq=changes + 1, prev_hash=head_hash)
        forged_hash = forged.computed_hash()
        conn.execute(
            "INSERT INTO audit_log (seq, at, actor, action, thing_id, issued, revoked, "
            "downloaded, prev_hash, hash) VALUES (%s, %s, 'operator', 'revoke', %s, '', 'abc',"
            " '', %s, %s)", (changes + 1, forged.at, forged.thing_id, head_hash, forged_hash))
        assert_names(env, f"audit record {changes + 1} was inserted")

        # inserted in the middle: later records renumbered, the forged one linked in place
        conn.execute("DELETE FROM audit_log WHERE seq = %s", (changes + 1,))
        conn.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 10")
        conn.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1010")
        prev9 = conn.execute("SELECT hash FROM audit_log WHERE seq = 9").fetchone()[0]
        slipped = AuditRecord(at=records[8]["at"], actor="operator", action="revoke",
                              thing_id=identity.thing_a1.id, seq=10, prev_hash=prev9)
        conn.execute(
            "INSERT INTO audit_log (seq, at, actor, action, thing_id, issued, revoked, "
            "downloaded, prev_hash, hash) VALUES (10, %s, 'operator', 'revoke', %s, '', '',"
            " '', %s, %s)", (slipped.at, slipped.thing_id, prev9, slipped.computed_hash()))
        conn.execute("UPDATE audit_chain SET seq = seq + 1")
        assert_names(env, "audit record 10 was inserted")


def assert_names(env: dict[str, str], problem: str) -> None:
    result = verify(env)
    assert result.returncode != 0, result.stdout
    assert problem in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
