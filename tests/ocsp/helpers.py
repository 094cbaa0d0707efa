"""Clients of the OCSP tests: the service's API over httpx, ``openssl ocsp`` and files."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

OPENSSL = "openssl"


@dataclass(frozen=True)
class Device:
    """A certificate issued over the API, with its key, as PEM files."""

    serial: str
    cert: Path
    key: Path


def issue(base_url: str, token: str, thing_id: str, folder: Path, name: str) -> Device:
    response = httpx.post(f"{base_url}/certs", json={"thing_id": thing_id, "key_type": "ec"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 201, response.text
    body = response.json()
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    cert.write_text(body["certificate"])
    key.write_text(body["private_key"])
    key.chmod(0o600)
    return Device(body["serial"], cert, key)


def revoke(base_url: str, token: str, serial: str) -> None:
    response = httpx.delete(f"{base_url}/certs/{serial}",
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, f"openssl {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def ocsp_query(url: str, ca: Path, *args: str) -> str:
    """``openssl ocsp`` against ``url``, the response verified against ``ca``; its whole
    output (stdout and stderr: openssl prints the verification result on stderr)."""
    done = openssl("ocsp", "-issuer", str(ca), "-url", url, "-CAfile", str(ca), *args,
                   check=False)
    return done.stdout + done.stderr
