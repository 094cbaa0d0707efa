"""The Docker image built from this tree, run as a user would: a container on a fresh volume
provisions its SoftHSM2 token and CA, serves against PostgreSQL, issues a certificate that openssl
verifies against the response's chain, and a new container on the same volume reuses them.

The containers use the host's network (FINDINGS section 1c), so they reach the test PostgreSQL,
identity provider and nats-server on 127.0.0.1, and the service listens on a free local port.
"""

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.docker import docker
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.nats import NatsServer
from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.postgres import PostgresCluster

STATE = "/var/lib/certs"
# A first build on a machine (base image, dependency layer) takes minutes; later ones reuse both.
pytestmark = pytest.mark.timeout(1500)


@dataclass
class Container:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def shell(self, script: str) -> str:
        """Run ``sh -c script`` in the container as its own user; its stdout."""
        return docker("exec", self.name, "sh", "-c", script).stdout

    def wait_healthy(self, timeout: float = 180) -> None:
        """Until Docker's HEALTHCHECK (GET /health) reports healthy."""
        deadline = time.monotonic() + timeout
        status = ""
        while time.monotonic() < deadline:
            state = json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)
            if not state["Running"]:
                raise AssertionError(f"container exited with {state['ExitCode']}: {self.logs()}")
            status = state.get("Health", {}).get("Status", "")
            if status == "healthy":
                return
            time.sleep(1)
        raise AssertionError(f"container is {status!r} after {timeout} s: {self.logs()}")

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)


class Containers:
    """Starts containers of the image on the host network; removes them and their volumes."""

    def __init__(self, image: str, identity: IdentityFixture, nats: NatsServer) -> None:
        self.image = image
        self.identity = identity
        self.nats = nats
        self.suffix = uuid.uuid4().hex[:10]
        self.started: list[Container] = []
        self.volumes: set[str] = set()

    def volume(self, name: str) -> str:
        full = f"certs-test-{name}-{self.suffix}"
        self.volumes.add(full)
        return full

    def run(self, volume: str, env: dict[str, str], *mounts: str,
            command: tuple[str, ...] = ()) -> Container:
        port = free_port()
        container = Container(f"certs-test-{len(self.started)}-{self.suffix}", port)
        settings = {
            "MF_CERTS_HTTP_HOST": "127.0.0.1",
            "MF_CERTS_HTTP_PORT": str(port),
            "MF_CERTS_WORKERS": "1",
            "MF_CERTS_HSM_POOL_SIZE": "2",
            "MF_BROKER_URL": self.nats.url,
            **self.identity.env(),
            **env,
        }
        arguments = ["run", "--detach", "--name", container.name, "--network", "host",
                     "--health-interval", "2s", "--volume", f"{self.volumes_check(volume)}:{STATE}"]
        for mount in mounts:
            arguments += ["--volume", mount]
        for key, value in settings.items():
            arguments += ["--env", f"{key}={value}"]
        docker(*arguments, self.image, *command)
        self.started.append(container)
        return container

    def volumes_check(self, volume: str) -> str:
        assert volume in self.volumes, "make volumes with Containers.volume()"
        return volume

    def cleanup(self) -> None:
        if self.started:
            docker("rm", "--force", *(c.name for c in self.started), check=False, timeout=600)
        if self.volumes:
            docker("volume", "rm", "--force", *self.volumes, check=False, timeout=600)


@pytest.fixture(scope="module")
def containers(certs_image: str, identity: IdentityFixture,
               nats_server: NatsServer) -> Iterator[Containers]:
    made = Containers(certs_image, identity, nats_server)
    try:
        yield made
    finally:
        made.cleanup()


def _issue(container: Container, token: str, thing_id: str) -> dict[str, object]:
    response = httpx.post(f"{container.url}/certs", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"thing_id": thing_id, "key_type": "ec"})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def _openssl(*args: str, input: str | None = None) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, input=input,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _verify_with_openssl(body: dict[str, object], workdir: Path) -> None:
    """openssl: the certificate chains to the response's CA chain and matches its key."""
    chain = workdir / "chain.pem"
    certificate = workdir / "cert.pem"
    chain_pems = body["ca_chain"]
    assert isinstance(chain_pems, list) and chain_pems
    chain.write_text("".join(str(p) for p in chain_pems))
    certificate.write_text(str(body["certificate"]))
    assert _openssl("verify", "-CAfile", str(chain), str(certificate)).strip().endswith(": OK")
    cert_key = _openssl("x509", "-in", str(certificate), "-noout", "-pubkey")
    private_key = _openssl("pkey", "-pubout", input=str(body["private_key"]))
    assert cert_key == private_key


def test_container_provisions_serves_and_reuses_its_state(
        containers: Containers, identity: IdentityFixture, postgres_server: PostgresCluster,
        tmp_path: Path) -> None:
    database = postgres_server.create_database("docker")
    env = {"MF_CERTS_DB_URL": postgres_server.url(database)}
    volume = containers.volume("pg")
    first = containers.run(volume, env)
    first.wait_healthy()

    logs = first.logs()
    assert "generated the HSM user PIN" in logs
    assert "created the SoftHSM2 token certs" in logs
    assert "CA key 'certs-ca' created" in logs
    body = _issue(first, identity.alice.token, identity.thing_a1.id)
    _verify_with_openssl(body, tmp_path)
    # Everything the service keeps is in the volume, owned by the service's user; the PIN 0600.
    assert first.shell("id -u").strip() == "10001"
    listing = first.shell(f"stat -c '%a %u %n' {STATE}/hsm.pin {STATE}/ca.crt {STATE}/crl.pem "
                          f"{STATE}/softhsm2.conf {STATE}/tokens")
    modes = {line.split()[2]: line.split()[:2] for line in listing.splitlines()}
    assert modes[f"{STATE}/hsm.pin"] == ["600", "10001"]
    assert all(owner == "10001" for _, owner in modes.values()), listing
    assert first.shell(f"cat {STATE}/ca.crt") == body["issuing_ca"]
    assert first.shell(f"ls {STATE}/certs.db 2>/dev/null || echo none").strip() == "none"
    # docker stop: tini hands SIGTERM to the service, which ends by itself (137 would be
    # Docker's SIGKILL after the grace period).
    docker("stop", "--time", "60", first.name)
    exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", first.name).stdout.strip()
    assert exit_code in ("0", "143"), first.logs()

    second = containers.run(volume, env)
    second.wait_healthy()
    logs = second.logs()
    assert "generated" not in logs and "created" not in logs, logs
    again = _issue(second, identity.alice.token, identity.thing_a1.id)
    assert again["ca_chain"] == body["ca_chain"]
    _verify_with_openssl(again, tmp_path)
    response = httpx.get(f"{second.url}/certs/{body['serial']}", timeout=30,
                         headers={"Authorization": f"Bearer {identity.alice.token}"})
    assert response.status_code == 200, response.text
    postgres_server.drop_database(database)


def test_pin_from_a_file_sqlite_and_the_demo_identity_provider(
        containers: Containers, tmp_path: Path) -> None:
    # The compose file's demo identity provider: the same image with the command demo-identity.
    things_port = free_port()
    auth_port = free_port({things_port})
    demo = containers.run(containers.volume("demo"),
                          {"DEMO_THINGS_ADDR": f"127.0.0.1:{things_port}",
                           "DEMO_AUTH_ADDR": f"127.0.0.1:{auth_port}"},
                          command=("demo-identity",))
    wait_for_port(things_port, 120, output=demo.logs)
    wait_for_port(auth_port, 30, output=demo.logs)
    demo_identity = json.loads(demo.shell(f"cat {STATE}/identity.json"))
    token = demo_identity["users"][0]["token"]
    thing_id = demo_identity["things"][0]["id"]

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    pin_file = secrets / "hsm_pin"
    pin_file.write_text("4839-2217-pin\n")
    pin_file.chmod(0o600)
    for path in (secrets, pin_file):
        # The container's user reads it, as a Docker secret of that owner would be.
        os.chown(path, 10001, 10001)
    container = containers.run(containers.volume("sqlite"),
                               {"MF_CERTS_HSM_PIN_FILE": "/run/secrets/hsm_pin",
                                "MF_THINGS_GRPC_URL": f"127.0.0.1:{things_port}",
                                "MF_AUTH_GRPC_URL": f"127.0.0.1:{auth_port}"},
                               f"{secrets}:/run/secrets:ro")
    container.wait_healthy()
    assert "generated" not in container.logs()
    kept = set(container.shell(f"ls {STATE}").split())
    assert {"ca.crt", "certs.db", "crl.pem", "softhsm2.conf", "tokens"} <= kept, kept
    assert "hsm.pin" not in kept
    body = _issue(container, token, thing_id)
    _verify_with_openssl(body, tmp_path)
    shown = json.loads(container.shell("certs-entrypoint ca show"))
    assert shown["key_label"] == "certs-ca"
    # The token opens with the PIN of the file and no other.
    with_wrong_pin = docker("exec", "--env", "MF_CERTS_HSM_PIN=not-the-pin", container.name,
                            "certs-entrypoint", "ca", "show", check=False)
    assert with_wrong_pin.returncode != 0
