"""`certs-client`, the installed console script, against the real service: every command,
token sources, files and their modes, JSON output and the exit codes."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from certs_sdk import CertsClient
from certs_sdk.models import Certificate
from cryptography import x509

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port
from tests.sdk.checks import assert_key_matches, assert_openssl_verifies

CLI = str(Path(sys.executable).with_name("certs-client"))
OK, OTHER, USAGE, BAD_REQUEST, AUTH, NOT_FOUND, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERTS_")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120,
                          env=env if env is not None else _env())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


@pytest.fixture
def alice(base_url: str, identity: IdentityFixture) -> list[str]:
    return ["--url", base_url, "--token", identity.alice.token]


def _load(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == OK, result.stderr
    body = json.loads(result.stdout)
    assert isinstance(body, dict)
    return body


def test_issue_writes_files_and_view_lists(alice: list[str], identity: IdentityFixture,
                                          ca_pem: str, tmp_path: Path) -> None:
    thing = identity.thing_a1.id
    key, cert, chain = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "ca.pem"
    issued = cli(*alice, "issue", thing, "--key-type", "ec", "--key-bits", "384", "--ttl",
                 "10h", "--key", str(key), "--cert", str(cert), "--ca", str(chain))
    assert issued.returncode == OK, issued.stderr
    assert _mode(key) == 0o600
    assert "PRIVATE KEY" not in issued.stdout
    serial = issued.stdout.split("serial:", 1)[1].split()[0]
    assert "key:         ec 384" in issued.stdout
    assert_openssl_verifies(cert.read_text(), chain.read_text(), tmp_path)
    assert chain.read_text().strip() == ca_pem.strip()
    openssl = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"],
                             capture_output=True, text=True, timeout=30)
    certified = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                               capture_output=True, text=True, timeout=30)
    assert openssl.returncode == 0 and openssl.stdout == certified.stdout

    viewed = _load(cli(*alice, "view", serial, "--json"))
    assert viewed["serial"] == serial and "private_key" not in viewed
    assert (viewed["thing_id"], viewed["key_bits"], viewed["downloaded"]) == (thing, 384, False)
    assert viewed["certificate"] == cert.read_text()

    listed = _load(cli(*alice, "list", thing, "--serial", serial, "--json"))
    assert listed["serials"] == [serial] and listed["total"] == 1
    full = _load(cli(*alice, "list", thing, "--serial", serial, "--full", "--json"))
    assert [c["serial"] for c in full["certs"]] == [serial]
    plain = cli(*alice, "list", thing, "--serial", serial)
    assert plain.returncode == OK and plain.stdout.startswith(serial)


def test_token_from_option_file_or_environment(base_url: str, identity: IdentityFixture,
                                               tmp_path: Path) -> None:
    thing = identity.thing_a1.id
    token_file = tmp_path / "token"
    token_file.write_text(identity.alice.token + "\n")
    by_file = cli("--url", base_url, "--token-file", str(token_file), "list", thing)
    by_env = cli("list", thing, env=_env(CERTS_TOKEN=identity.alice.token, CERTS_URL=base_url))
    after = cli("list", thing, "--url", base_url, "--token", identity.alice.token)
    assert (by_file.returncode, by_env.returncode, after.returncode) == (OK, OK, OK)
    missing = cli("--url", base_url, "list", thing)
    assert missing.returncode == USAGE and "token" in missing.stderr
    wrong = cli("--url", base_url, "--token", identity.unknown_token, "list", thing)
    assert wrong.returncode == AUTH
    assert wrong.stderr.strip() == (
        "certs-client: 401 failed to perform authentication over the entity")
    assert identity.unknown_token not in wrong.stderr


def test_a_key_is_never_fetched_to_nowhere(alice: list[str], identity: IdentityFixture,
                                           tmp_path: Path) -> None:
    thing = identity.thing_a2.id
    client_args = dict(zip(alice[::2], alice[1::2], strict=True))
    with CertsClient(client_args["--url"], client_args["--token"]) as sdk:
        before = sdk.list_serials(thing, limit=200).total
        refused = cli(*alice, "issue", thing)
        assert refused.returncode == USAGE and "--key" in refused.stderr
        nowhere = cli(*alice, "issue", thing, "--key", str(tmp_path / "no" / "k.pem"))
        assert nowhere.returncode == USAGE and "cannot write" in nowhere.stderr
        assert sdk.list_serials(thing, limit=200).total == before
    as_json = _load(cli(*alice, "issue", thing, "--key-type", "rsa", "--json"))
    assert as_json["private_key"].startswith("-----BEGIN RSA PRIVATE KEY")
    assert as_json["key_bits"] == 2048 and as_json["expires_at"].endswith("Z")


def test_download_rotate_renew_revoke(alice: list[str], base_url: str,
                                      identity: IdentityFixture, ca_pem: str,
                                      tmp_path: Path) -> None:
    a1 = identity.thing_a1
    issued = _load(cli(*alice, "issue", a1.id, "--key-type", "ec", "--ttl", "5h", "--json"))
    serial = issued["serial"]
    key_file = tmp_path / "thing.key"
    key_file.write_text(a1.key)
    device_key, device_cert = tmp_path / "device.key", tmp_path / "device.pem"
    got = cli("--url", base_url, "download", serial, "--thing-key-file", str(key_file),
              "--key", str(device_key), "--cert", str(device_cert))
    assert got.returncode == OK, got.stderr
    assert _mode(device_key) == 0o600
    assert device_key.read_text() == issued["private_key"]
    again = cli("--url", base_url, "--json", "download", serial, "--json",
                "--key", str(device_key), env=_env(CERTS_THING_KEY=a1.key))
    assert again.returncode == AUTH
    assert json.loads(again.stderr) == {"error": "certificate already downloaded",
                                        "status": 403, "exit": AUTH}
    no_key = cli("--url", base_url, "download", serial, "--key", str(device_key))
    assert no_key.returncode == USAGE

    rotated_key = tmp_path / "rotated.key"
    rotated = cli(*alice, "rotate", serial, "--key-type", "rsa", "--ttl", "4h",
                  "--key", str(rotated_key), "--json")
    body = _load(rotated)
    assert "private_key" not in body and _mode(rotated_key) == 0o600
    assert body["thing_id"] == a1.id and body["private_key_type"] == "rsa"
    assert_openssl_verifies(body["certificate"], ca_pem, tmp_path)
    assert_key_matches(Certificate.from_body(body, downloaded=False), rotated_key.read_text())

    renewed = _load(cli(*alice, "renew", body["serial"], "--json",
                        "--key", str(tmp_path / "renewed.key")))
    assert renewed["serial"] != body["serial"]
    revoked = _load(cli(*alice, "revoke", renewed["serial"], "--json"))
    assert revoked["serial"] == renewed["serial"] and revoked["revoked_at"].endswith("Z")
    for gone in (serial, body["serial"], renewed["serial"]):
        assert cli(*alice, "view", gone).returncode == NOT_FOUND
    assert cli(*alice, "revoke", renewed["serial"]).returncode == NOT_FOUND


def test_ca_crl_and_health(base_url: str, ca_pem: str, tmp_path: Path) -> None:
    der_file = tmp_path / "crl.der"
    assert cli("--url", base_url, "crl", "--der", "--out", str(der_file)).returncode == OK
    crl = x509.load_der_x509_crl(der_file.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    pem = cli("--url", base_url, "crl")
    assert pem.returncode == OK and pem.stdout.startswith("-----BEGIN X509 CRL-----")
    assert x509.load_pem_x509_crl(pem.stdout.encode()).issuer == ca.subject
    der_out = subprocess.run([CLI, "--url", base_url, "crl", "--der"], capture_output=True,
                             timeout=60, env=_env())
    assert x509.load_der_x509_crl(der_out.stdout).issuer == ca.subject
    ca_file = tmp_path / "chain.pem"
    assert cli("--url", base_url, "ca", "--out", str(ca_file)).returncode == OK
    assert x509.load_pem_x509_certificates(ca_file.read_bytes())[0] == ca
    assert _mode(ca_file) == 0o644 & ~_umask()
    shown = cli("--url", base_url, "ca", "--json")
    assert x509.load_pem_x509_certificate(
        json.loads(shown.stdout)["ca_chain"].encode()) == ca
    health = cli("--url", base_url, "health", "--json")
    assert health.returncode == OK and json.loads(health.stdout)["status"] == "pass"
    into_a_folder = cli("--url", base_url, "crl", "--out", str(tmp_path))
    assert into_a_folder.returncode == OTHER and "cannot write" in into_a_folder.stderr


def test_exit_codes(alice: list[str], base_url: str, identity: IdentityFixture,
                    tmp_path: Path) -> None:
    thing = identity.thing_a1.id
    key = str(tmp_path / "k.pem")
    assert cli(*alice).returncode == USAGE
    assert cli(*alice, "issue").returncode == USAGE
    assert cli(*alice, "issue", thing, "--key-type", "dsa", "--key", key).returncode == USAGE
    bad = cli(*alice, "issue", thing, "--key-type", "ec", "--key-bits", "1000", "--key", key)
    assert (bad.returncode, bad.stderr.strip()) == (BAD_REQUEST,
                                                    "certs-client: 400 invalid key bits")
    assert cli(*alice, "list", thing, "--limit", "500").returncode == BAD_REQUEST
    assert cli(*alice, "list", thing, "--from", "yesterday").returncode == USAGE
    mallory = ["--url", base_url, "--token", identity.mallory.token]
    assert cli(*mallory, "list", thing).returncode == AUTH
    assert cli(*alice, "view", "abcdef99").returncode == NOT_FOUND
    nobody = cli("--url", f"http://127.0.0.1:{free_port()}", "--retries", "1", "crl")
    assert nobody.returncode == UNAVAILABLE and "cannot reach" in nobody.stderr


def test_unavailable_exit_code_and_retry_notice(alice: list[str],
                                                identity_down: IdentityFixture) -> None:
    once = cli(*alice, "--retries", "1", "list", identity_down.thing_a1.id)
    assert once.returncode == UNAVAILABLE
    assert once.stderr.strip() == "certs-client: 503 things service unavailable"
    twice = cli(*alice, "--retries", "2", "list", identity_down.thing_a1.id)
    assert twice.returncode == UNAVAILABLE
    assert "503 things service unavailable; retrying in" in twice.stderr
