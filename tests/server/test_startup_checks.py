"""Start-up failures of ``certs serve`` and ``scripts/run`` (SPEC section 11): one line naming
the cause and the variable, no traceback, a non-zero exit. After start, a CRL path that becomes
unwritable fails /health but never a revocation (SPEC section 7), and /health fails while the
identity services are down."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.serve import ROOT, Served, serve_env, start_serve, stop_serve


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory, identity: IdentityFixture
             ) -> dict[str, str]:
    """A service environment that starts (its own token and CA, SQLite); each test breaks one
    thing of it."""
    return serve_env(tmp_path_factory.mktemp("startup"), identity, workers=1)


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "serve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)


def _failure(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed start printed."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _other_ca(tmp_path: Path) -> Path:
    key, cert = tmp_path / "other.key", tmp_path / "other.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-subj", "/CN=Another CA", "-days", "30"], check=True, capture_output=True)
    return cert


def test_database_unreachable(base_env: dict[str, str]) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_DB_URL": "", "MF_CERTS_DB_HOST": "127.0.0.1",
                            "MF_CERTS_DB_PORT": str(free_port())}))
    assert line.startswith("certs: database unreachable: "), line
    assert "Connection refused" in line and "MF_CERTS_DB_HOST, MF_CERTS_DB_PORT" in line


def test_database_refusing(base_env: dict[str, str], postgres_server: PostgresCluster) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_DB_URL": "", "MF_CERTS_DB_HOST": "127.0.0.1",
                            "MF_CERTS_DB_PORT": str(postgres_server.port),
                            "MF_CERTS_DB_USER": "nobody", "MF_CERTS_DB_PASS": "s3cret-pass"}))
    assert line.startswith("certs: database refused the connection: "), line
    assert "MF_CERTS_DB_USER, MF_CERTS_DB_PASS" in line and "nobody" in line
    assert "s3cret-pass" not in line


def test_database_missing(base_env: dict[str, str], postgres_server: PostgresCluster) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_DB_URL": "", "MF_CERTS_DB_HOST": "127.0.0.1",
                            "MF_CERTS_DB_PORT": str(postgres_server.port),
                            "MF_CERTS_DB_USER": "postgres", "MF_CERTS_DB": "no_such_db"}))
    assert "no_such_db" in line and "(MF_CERTS_DB or MF_CERTS_DB_URL)" in line, line


def test_ca_certificate_unreadable(base_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    line = _failure(_serve({**base_env, "MF_CERTS_SIGN_CA_PATH": str(missing)}))
    assert line == (f"certs: cannot read the CA certificate {missing} (MF_CERTS_SIGN_CA_PATH): "
                    "No such file or directory")


def test_ca_certificate_not_pem(base_env: dict[str, str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("this is not a certificate\n")
    line = _failure(_serve({**base_env, "MF_CERTS_SIGN_CA_PATH": str(garbage)}))
    assert line == (f"certs: the CA certificate {garbage} (MF_CERTS_SIGN_CA_PATH) is not a PEM "
                    "certificate")


def test_ca_certificate_not_the_hsm_key(base_env: dict[str, str], tmp_path: Path) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_SIGN_CA_PATH": str(_other_ca(tmp_path))}))
    assert "does not match the key 'certs-ca' in the HSM" in line, line
    assert "MF_CERTS_SIGN_CA_PATH" in line


def test_pin_wrong(base_env: dict[str, str]) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_HSM_PIN": "wrong-pin-0000"}))
    assert "rejected the configured user PIN" in line and "MF_CERTS_HSM_PIN" in line, line
    assert "wrong-pin-0000" not in line


def test_token_missing(base_env: dict[str, str]) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_HSM_TOKEN": "absent"}))
    assert "no PKCS#11 token labelled 'absent'" in line and "(MF_CERTS_HSM_TOKEN)" in line, line


def test_port_in_use(base_env: dict[str, str]) -> None:
    port = free_port()
    with socket.socket() as other:
        other.bind(("0.0.0.0", port))
        other.listen()
        line = _failure(_serve({**base_env, "MF_CERTS_HTTP_PORT": str(port)}))
    assert line == (f"certs: port {port} (MF_CERTS_HTTP_PORT) on 0.0.0.0 is already in use by "
                    "another process")


def test_crl_path_unwritable(base_env: dict[str, str], tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file where the CRL's folder should be\n")
    path = not_a_folder / "crl.pem"
    line = _failure(_serve({**base_env, "MF_CERTS_CRL_PATH": str(path)}))
    assert line.startswith(f"certs: the CRL cannot be written to {path} (MF_CERTS_CRL_PATH): ")


def test_bad_address(base_env: dict[str, str]) -> None:
    line = _failure(_serve({**base_env, "MF_CERTS_HTTP_HOST": "localhost"}))
    assert "MF_CERTS_HTTP_HOST must be an IP address" in line, line


def test_run_with_identity_port_in_use(tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MF_")},
           "MF_CERTS_HTTP_PORT": str(free_port({port})),
           "MF_THINGS_GRPC_URL": f"127.0.0.1:{port}",
           "MF_AUTH_GRPC_URL": f"127.0.0.1:{free_port({port})}",
           "MF_BROKER_URL": f"nats://127.0.0.1:{free_port({port})}"}
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        result = subprocess.run([str(ROOT / "scripts" / "run"), "--state", str(tmp_path / "s")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    line = _failure(result)
    assert line == (f"scripts/run: the demo identity provider cannot listen on 127.0.0.1:{port} "
                    "(MF_THINGS_GRPC_URL): the port is in use by another process or the address "
                    "is not host:port")


# ---- after start ------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, identity: IdentityFixture) -> Iterator[Served]:
    crl_folder = tmp_path / "crl"
    env = serve_env(tmp_path, identity, workers=2,
                    extra={"MF_CERTS_CRL_PATH": str(crl_folder / "crl.pem")})
    served = start_serve(env, tmp_path)
    try:
        yield served
    finally:
        stop_serve(served.process)


def _healths(client: httpx.Client, count: int = 6) -> list[httpx.Response]:
    """Several answers (new connections, so both workers answer some)."""
    return [client.get("/health", headers={"Connection": "close"}) for _ in range(count)]


def _wait_health(client: httpx.Client, status: int, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health", headers={"Connection": "close"})
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.3)


def test_unwritable_crl_path_fails_health_not_revocations(served: Served, tmp_path: Path,
                                                          identity: IdentityFixture) -> None:
    alice = {"Authorization": f"Bearer {identity.alice.token}"}
    crl_folder = tmp_path / "crl"
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        assert _wait_health(client, 200).status_code == 200
        issued = client.post("/certs", json={"thing_id": identity.thing_a1.id,
                                             "key_type": "ec"}, headers=alice)
        assert issued.status_code == 201, issued.text
        serial = issued.json()["serial"]

        shutil.rmtree(crl_folder)
        crl_folder.write_text("the CRL's folder is now a file\n")
        revoked = client.delete(f"/certs/{serial}", headers=alice)
        assert revoked.status_code == 200, revoked.text
        for pem_route in ("/crl.pem", "/crl"):
            response = client.get(pem_route, headers={"Connection": "close"})
            assert response.status_code == 200
            crl = (x509.load_pem_x509_crl(response.content) if pem_route == "/crl.pem"
                   else x509.load_der_x509_crl(response.content))
            assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
        for health in _healths(client):
            assert health.status_code == 503, health.text
            check = health.json()["checks"]["crl"]
            assert check["status"] == "fail" and "MF_CERTS_CRL_PATH" in check["output"]
            assert health.json()["checks"]["hsm"]["status"] == "pass"

        crl_folder.unlink()
        crl_folder.mkdir()
        for health in _healths(client):
            assert health.status_code == 200, health.text
    written = x509.load_pem_x509_crl((crl_folder / "crl.pem").read_bytes())
    assert written.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    assert "Traceback" not in served.output()


def test_health_fails_while_identity_services_are_down(served: Served,
                                                      identity: IdentityFixture) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        healthy = _wait_health(client, 200)
        assert healthy.status_code == 200, healthy.text
        checks = healthy.json()["checks"]
        assert checks["things"]["status"] == "pass" and checks["auth"]["status"] == "pass"
        with identity.stopped():
            down = _wait_health(client, 503)
            assert down.status_code == 503, down.text
            body = down.json()
            assert body["status"] == "fail"
            assert body["checks"]["things"]["status"] == "fail"
            assert body["checks"]["auth"]["status"] == "fail"
            assert body["checks"]["hsm"]["status"] == "pass"
            issue = client.post("/certs", json={"thing_id": identity.thing_a1.id},
                                headers={"Authorization": f"Bearer {identity.alice.token}"})
            assert issue.status_code == 503  # what /health announced
        assert _wait_health(client, 200).status_code == 200
