"""One CRL for the whole service (SPEC 7): two replicas of ``certs serve`` (two workers each)
on one PostgreSQL, revocations on alternating replicas, and GETs that go to either: the CRL
number a client is served never goes back, one number always has the same bytes, and a
revocation is listed by whichever replica answers next."""

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.serve import ROOT, Served, serve_env, start_serve, stop_serve
from tests.ocsp.helpers import issue, revoke

GETS = 50
REVOKE_EVERY = 5


@dataclass
class Replicas:
    served: list[Served]
    env: dict[str, str]


@pytest.fixture
def replicas(tmp_path: Path, identity: IdentityFixture,
             postgres_server: PostgresCluster) -> Iterator[Replicas]:
    database = postgres_server.create_database("replicas")
    (tmp_path / "a").mkdir()
    first_env = serve_env(tmp_path / "a", identity, workers=2,
                          extra={"MF_CERTS_DB_URL": postgres_server.url(database)})
    # The second replica: the same token, CA and database, its own port, CRL file and metrics.
    second = tmp_path / "b"
    (second / "metrics").mkdir(parents=True)
    second_env = {**first_env, "MF_CERTS_HTTP_PORT": str(free_port({int(
        first_env["MF_CERTS_HTTP_PORT"])})), "MF_CERTS_CRL_PATH": str(second / "crl.pem"),
        "PROMETHEUS_MULTIPROC_DIR": str(second / "metrics")}
    started: list[Served] = []
    try:
        for env, folder in ((first_env, tmp_path / "a"), (second_env, second)):
            started.append(start_serve(env, folder))
        yield Replicas(started, first_env)
    finally:
        for served in started:
            stop_serve(served.process)
        postgres_server.drop_database(database)


def _crl(port: int) -> tuple[int, bytes, x509.CertificateRevocationList]:
    # A new connection each time, so that either worker of the replica may answer.
    with httpx.Client(timeout=30) as client:
        response = client.get(f"http://127.0.0.1:{port}/crl")
    assert response.status_code == 200
    crl = x509.load_der_x509_crl(response.content)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert response.headers["etag"] == f'"{number}"'
    return number, response.content, crl


def test_numbers_never_go_back_across_replicas_and_workers(
        replicas: Replicas, identity: IdentityFixture, tmp_path: Path) -> None:
    ports = [served.port for served in replicas.served]
    ca = x509.load_pem_x509_certificate(replicas.served[0].signing_ca.read_bytes())
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    token, thing = identity.alice.token, identity.thing_a1.id
    seen: dict[int, bytes] = {}
    numbers: list[int] = []
    revoked: list[int] = []
    for index in range(GETS):
        if index % REVOKE_EVERY == 0:
            on = ports[(index // REVOKE_EVERY) % 2]
            device = issue(f"http://127.0.0.1:{on}", token, thing, tmp_path / "devices",
                           f"d{index}")
            revoke(f"http://127.0.0.1:{on}", token, device.serial)
            revoked.append(int(device.serial, 16))
        number, der, crl = _crl(ports[index % 2])
        assert crl.is_signature_valid(public_key)
        assert seen.setdefault(number, der) == der, f"two CRLs with number {number}"
        assert not numbers or number >= numbers[-1], f"number went back: {numbers} then {number}"
        numbers.append(number)
        listed = {entry.serial_number for entry in crl}
        assert set(revoked) <= listed, "a revocation missing from the CRL served after it"
    assert len(set(numbers)) >= GETS // REVOKE_EVERY  # each revocation made a new CRL
    # Both replicas end on the same newest CRL, and each wrote it to its own file.
    final = [_crl(port) for port in ports]
    assert final[0][1] == final[1][1]
    # The operator's `certs crl` signs a newer one: both replicas serve exactly that CRL.
    signed = subprocess.run([sys.executable, "-m", "server.cli", "crl"], cwd=ROOT,
                            env=replicas.env, capture_output=True, text=True, timeout=120)
    assert signed.returncode == 0, signed.stderr
    written = Path(replicas.env["MF_CERTS_CRL_PATH"]).read_bytes()
    by_cli = x509.load_pem_x509_crl(written)
    number = by_cli.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > final[0][0]
    for port in ports:
        served_number, der, _ = _crl(port)
        assert (served_number, der) == (number, by_cli.public_bytes(Encoding.DER))
