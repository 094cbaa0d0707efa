"""The HTTP service on the second PKCS#11 implementation, tpm2-pkcs11 over a software TPM: the
CA is made in the TPM, and `certs serve` issues, revokes and publishes a CRL that openssl
verifies (the sealing of client keys uses the TPM's AES-CBC + HMAC format)."""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from devtools import tpm2
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port
from tests.fixtures.serve import ROOT, start_serve, stop_serve
from tests.fixtures.tpm2 import port_pair

LABEL = "certs-tpm"


@pytest.fixture
def tpm_env(tmp_path: Path, identity: IdentityFixture) -> Iterator[dict[str, str]]:
    """A software TPM with a token holding the sealing keys, and the service's environment
    pointed at it (nothing of SoftHSM, nothing of the pytest process's MF_* settings)."""
    pin, so_pin = secrets.token_hex(8), secrets.token_hex(8)
    tpm = tpm2.start(tmp_path / "tpm", port_pair())
    try:
        tpm2.init_token(tpm, LABEL, pin, so_pin, tpm2.SEALING_KEYS)
        state = tmp_path / "state"
        state.mkdir()
        port = free_port()
        yield {
            **{k: v for k, v in os.environ.items()
               if not k.startswith("MF_") and k not in ("SOFTHSM2_CONF",
                                                        "PROMETHEUS_MULTIPROC_DIR")},
            **tpm.env,
            "MF_CERTS_HSM_MODULE": tpm2.find_module(),
            "MF_CERTS_HSM_TOKEN": LABEL,
            "MF_CERTS_HSM_PIN": pin,
            "MF_CERTS_SIGN_CA_PATH": str(state / "ca.crt"),
            "MF_CERTS_DB_URL": f"sqlite:///{state / 'certs.db'}",
            "MF_CERTS_CRL_PATH": str(state / "crl.pem"),
            "MF_CERTS_HTTP_PORT": str(port),
            "MF_CERTS_WORKERS": "1",
            "MF_CERTS_HSM_POOL_SIZE": "1",  # one command at a time on a TPM (docs/hsm.md)
            "MF_BROKER_URL": f"nats://127.0.0.1:{free_port({port})}",
            **identity.env(),
        }
    finally:
        tpm.stop()


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_service_on_a_tpm_issues_revokes_and_publishes_a_crl_openssl_verifies(
    tpm_env: dict[str, str], identity: IdentityFixture, tmp_path: Path,
) -> None:
    created = subprocess.run([sys.executable, "-m", "server.cli", "ca", "create",
                              "--key-type", "ec", "--bits", "256"],
                             cwd=ROOT, env=tpm_env, capture_output=True, text=True, timeout=180)
    assert created.returncode == 0, created.stderr
    ca = Path(tpm_env["MF_CERTS_SIGN_CA_PATH"])
    served = start_serve(tpm_env, tmp_path)
    base = f"http://127.0.0.1:{served.port}"
    bearer = {"Authorization": f"Bearer {identity.alice.token}"}
    thing = identity.thing_a1
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            issued = client.post("/certs", json={"thing_id": thing.id, "key_type": "ec"},
                                 headers=bearer)
            assert issued.status_code == 201, issued.text
            body = issued.json()
            device = tmp_path / "device.pem"
            device.write_text(body["certificate"])
            verified = _openssl("verify", "-CAfile", ca, "-purpose", "sslclient", device)
            assert verified.returncode == 0 and "OK" in verified.stdout, verified.stderr

            # The key was sealed in the TPM and opens again for the one download.
            downloaded = client.get(f"/certs/{body['serial']}/download",
                                    headers={"Authorization": f"Thing {thing.key}"})
            assert downloaded.status_code == 200, downloaded.text
            assert downloaded.json()["private_key"] == body["private_key"]

            revoked = client.delete(f"/certs/{body['serial']}", headers=bearer)
            assert revoked.status_code == 200, revoked.text
            crl_pem = client.get("/crl.pem")
            assert crl_pem.status_code == 200
        crl_file = tmp_path / "served-crl.pem"
        crl_file.write_text(crl_pem.text)
        checked = _openssl("crl", "-in", crl_file, "-CAfile", ca, "-noout")
        assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr
        crl = x509.load_pem_x509_crl(crl_pem.text.encode())
        assert crl.get_revoked_certificate_by_serial_number(int(body["serial"], 16)) is not None
        refused = _openssl("verify", "-CAfile", ca, "-crl_check", "-CRLfile", crl_file,
                           "-purpose", "sslclient", device)
        assert refused.returncode != 0 and "revoked" in refused.stdout + refused.stderr
    finally:
        stop_serve(served.process)
