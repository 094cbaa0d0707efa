"""One command to a running CA on the embedded default (SoftHSM2, SQLite, demo identities).

On first use it creates, under the state folder: a SoftHSM2 token with a random PIN (kept in a
0600 file), an EC P-256 CA key inside the token and its certificate, and a demo identity file.
Later starts reuse them. It then starts the static identity provider and serves on port 8204.
"""

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from devtools import softhsm

TOKEN_LABEL = "certs"


def prepare(state: Path) -> dict[str, str]:
    """The state folder made ready; returns the MF_* environment for the service."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    config = softhsm.write_config(state)
    pin_file = state / "hsm.pin"
    if not pin_file.exists():
        pin_file.write_text(secrets.token_urlsafe(16))
        pin_file.chmod(0o600)
        softhsm.init_token(config, TOKEN_LABEL, pin_file.read_text(), secrets.token_urlsafe(16))
    env = {
        "SOFTHSM2_CONF": str(config),
        "MF_CERTS_HSM_MODULE": os.environ.get("MF_CERTS_HSM_MODULE", softhsm.find_module()),
        "MF_CERTS_HSM_TOKEN": TOKEN_LABEL,
        "MF_CERTS_HSM_PIN_FILE": str(pin_file),
        "MF_CERTS_SIGN_CA_PATH": str(state / "ca.crt"),
        "MF_CERTS_DB_URL": f"sqlite:///{state / 'certs.db'}",
        "MF_CERTS_CRL_PATH": str(state / "crl.pem"),
        "MF_THINGS_GRPC_URL": os.environ.get("MF_THINGS_GRPC_URL", "127.0.0.1:8183"),
        "MF_AUTH_GRPC_URL": os.environ.get("MF_AUTH_GRPC_URL", "127.0.0.1:8181"),
        "MF_BROKER_URL": os.environ.get("MF_BROKER_URL", "nats://127.0.0.1:4222"),
        "MF_CERTS_LOG_LEVEL": os.environ.get("MF_CERTS_LOG_LEVEL", "info"),
    }
    if not (state / "ca.crt").exists():
        subprocess.run([sys.executable, "-m", "server.cli", "ca", "create", "--key-type", "ec",
                        "--bits", "256", "--cn", "Certs Quickstart CA"],
                       env={**os.environ, **env}, check=True)
    return env


def start_identity(state: Path, env: dict[str, str]) -> "subprocess.Popen[str]":
    identity_file = state / "identity.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.identity.provider", "--file", str(identity_file),
         "--demo", "--things-addr", env["MF_THINGS_GRPC_URL"],
         "--auth-addr", env["MF_AUTH_GRPC_URL"], "--log-level", "warning"],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the identity provider did not start")
        if line.startswith("identity provider ready"):
            return process
    raise RuntimeError("the identity provider did not start in time")


def start_nats(broker_url: str) -> "subprocess.Popen[bytes] | None":
    """A local nats-server for rotation events, when installed and nothing listens there."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
    address = urlparse(broker_url)
    host, port = address.hostname or "127.0.0.1", address.port or 4222
    if binary is None or host not in ("127.0.0.1", "localhost"):
        return None
    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            return None
    return subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=__doc__)
    parser.add_argument("--state", default=os.environ.get("CERTS_STATE", "state"))
    state = Path(parser.parse_args().state).resolve()
    env = prepare(state)
    identity = start_identity(state, env)
    nats = start_nats(env["MF_BROKER_URL"])
    demo = json.loads((state / "identity.json").read_text())
    token = demo["users"][0]["token"]
    thing = demo["things"][0]
    port = os.environ.get("MF_CERTS_HTTP_PORT", "8204")
    print(f"demo user token: {token}")
    print(f"demo thing: {thing['id']} (thing key {thing['key']})")
    print("issue a certificate:")
    print(f"  curl -s -X POST http://localhost:{port}/certs -H 'Authorization: Bearer {token}' "
          f"-H 'Content-Type: application/json' -d '{{\"thing_id\": \"{thing['id']}\", "
          f"\"key_type\": \"ec\"}}'", flush=True)
    try:
        return subprocess.call([sys.executable, "-m", "server.cli", "serve"],
                               env={**os.environ, **env})
    finally:
        for process in (identity, nats):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
