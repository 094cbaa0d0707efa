"""One command to a running CA on the embedded default (SoftHSM2, SQLite, demo identities).

On first use it creates, under the state folder: a SoftHSM2 token with a random PIN (kept in a
0600 file), an EC P-256 CA key inside the token and its certificate, and a demo identity file.
Later starts reuse them. It writes the settings to ``certs.env`` there (for ``certs --state``),
starts the static identity provider and a nats-server, and serves on port 8204. SIGTERM or SIGINT
stops everything it started; each child also gets SIGTERM if the quickstart is killed.
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
from typing import Any
from urllib.parse import urlparse

from authority.files import write_atomically
from devtools import softhsm
from server.port_guard import PortInUse, probe_free
from server.state_file import FILE_NAME, STATE_VARIABLE, write_state
from server.supervision import StopSignals, start_child, stop_children

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
    for variable in ("MF_CERTS_HTTP_PORT", "MF_CERTS_HTTP_HOST"):
        if os.environ.get(variable):
            env[variable] = os.environ[variable]
    write_state(state, env)
    if not (state / "ca.crt").exists():
        created = start_child([sys.executable, "-m", "server.cli", "ca", "create", "--key-type",
                               "ec", "--bits", "256", "--cn", "Certs Quickstart CA"],
                              env={**os.environ, **env})
        if created.wait() != 0:
            raise QuickstartError("the CA could not be created in the token")
    return env


class QuickstartError(Exception):
    """The quickstart cannot go on; the message is the one line it prints."""


def check_identity_ports(env: dict[str, str]) -> None:
    """The demo identity provider's two addresses are free (a one-line error otherwise)."""
    for variable in ("MF_THINGS_GRPC_URL", "MF_AUTH_GRPC_URL"):
        host, _, port = env[variable].rpartition(":")
        try:
            probe_free(socket.gethostbyname(host or "127.0.0.1"), int(port))
        except (ValueError, OSError, PortInUse):
            raise QuickstartError(
                f"the demo identity provider cannot listen on {env[variable]} ({variable}): "
                "the port is in use by another process or the address is not host:port"
            ) from None


def start_identity(state: Path, env: dict[str, str]) -> "subprocess.Popen[str]":
    identity_file = state / "identity.json"
    process: subprocess.Popen[str] = start_child(
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
            break
        if line.startswith("identity provider ready"):
            return process
    stop_children([process])
    raise QuickstartError("the demo identity provider did not start")


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
    nats: subprocess.Popen[bytes] = start_child(
        [binary, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return nats


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/run", description=__doc__)
    parser.add_argument("--state", default=os.environ.get(STATE_VARIABLE, "state"))
    state = Path(parser.parse_args().state).resolve()
    stop = StopSignals()
    children: list[subprocess.Popen[Any] | None] = []
    try:
        env = prepare(state)
        check_identity_ports(env)
        if stop.stopping:
            return 0
        children.append(start_identity(state, env))
        children.append(start_nats(env["MF_BROKER_URL"]))
        _print_demo(state, env)
        serve = start_child([sys.executable, "-m", "server.cli", "serve"],
                            env={**os.environ, **env})
        children.insert(0, serve)
        stop.wait_while_running(serve)
        return 0 if stop.stopping else (serve.returncode or 0)
    except QuickstartError as exc:
        print(f"scripts/run: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_children(children)


def _print_demo(state: Path, env: dict[str, str]) -> None:
    """Print the demo credentials and write them to ``demo.env`` (0600) for the README's
    walkthrough: CERTS_URL, TOKEN (the demo user's), THING and KEY (the first demo thing's)."""
    demo = json.loads((state / "identity.json").read_text())
    token = demo["users"][0]["token"]
    thing = demo["things"][0]
    port = env.get("MF_CERTS_HTTP_PORT", "8204")
    url = f"http://localhost:{port}"
    write_atomically(state / "demo.env", f"CERTS_URL={url}\nTOKEN={token}\n"
                     f"THING={thing['id']}\nKEY={thing['key']}\n", mode=0o600)
    print(f"demo user token: {token}")
    print(f"demo thing: {thing['id']} (thing key {thing['key']})")
    print(f"the same as shell variables: {state / 'demo.env'}; the service's settings for "
          f"the operator's command line: {state / FILE_NAME} "
          f"(.venv/bin/certs --state {state} ca show)")
    print("issue a certificate:")
    print(f"  curl -s -X POST {url}/certs -H 'Authorization: Bearer {token}' "
          f"-H 'Content-Type: application/json' -d '{{\"thing_id\": \"{thing['id']}\", "
          f"\"key_type\": \"ec\"}}'", flush=True)


if __name__ == "__main__":
    sys.exit(main())
