"""The README's run command, as a user runs it: start, issue with the printed curl line, list,
download and revoke with the printed token."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.fixtures.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    port = free_port()
    env = {**os.environ,
           "MF_CERTS_HTTP_PORT": str(port),
           "MF_THINGS_GRPC_URL": f"127.0.0.1:{free_port()}",
           "MF_AUTH_GRPC_URL": f"127.0.0.1:{free_port()}",
           "MF_BROKER_URL": f"nats://127.0.0.1:{free_port()}",
           "MF_CERTS_WORKERS": "2"}
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "run"), "--state", str(tmp_path / "state")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    printed: dict[str, str] = {}
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 240
        while "curl" not in printed and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "scripts/run ended before printing the demo token"
            if line.startswith("demo user token: "):
                printed["token"] = line.split(": ", 1)[1].strip()
            elif line.startswith("demo thing: "):
                words = line.split()
                printed["thing"], printed["key"] = words[2], words[5].rstrip(")")
            elif line.strip().startswith("curl "):
                printed["curl"] = line.strip()
        wait_for_port(port, 120, process=process)
        yield port, printed
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_run_command_serves_the_readme_flow(quickstart: tuple[int, dict[str, str]],
                                            tmp_path: Path) -> None:
    port, printed = quickstart
    issued = subprocess.run(["bash", "-c", printed["curl"]], capture_output=True, text=True,
                            check=True, timeout=60)
    body = json.loads(issued.stdout)
    serial = body["serial"]
    certificate = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert format(certificate.serial_number, "x") == serial
    assert body["thing_id"] == printed["thing"]
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(body["issuing_ca"])
    cert_file = tmp_path / "cert.pem"
    cert_file.write_text(body["certificate"])
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), "-purpose",
                             "sslclient", str(cert_file)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr

    base = f"http://127.0.0.1:{port}"
    user = {"Authorization": f"Bearer {printed['token']}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        listed = client.get(f"/things/{printed['thing']}/serials", headers=user)
        assert listed.status_code == 200
        assert serial in listed.json()["serials"]

        download = client.get(f"/certs/{serial}/download",
                              headers={"Authorization": f"Thing {printed['key']}"})
        assert download.status_code == 200, download.text
        assert download.json()["private_key"].startswith("-----BEGIN EC PRIVATE KEY-----")
        again = client.get(f"/certs/{serial}/download",
                           headers={"Authorization": f"Thing {printed['key']}"})
        assert again.status_code == 403

        revoked = client.delete(f"/certs/{serial}", headers=user)
        assert revoked.status_code == 200, revoked.text
        crl = x509.load_der_x509_crl(client.get("/crl").content)
        assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
        assert client.get(f"/certs/{serial}", headers=user).status_code == 404
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "pass"
