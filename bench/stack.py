"""What every HTTP bench starts and drives: the bench stack and its load client.

``BenchStack`` starts, on this machine, a SoftHSM2 token with an EC P-256 CA (the quickstart's),
a throwaway PostgreSQL cluster and the demo identity provider over gRPC; ``serve`` then starts
``certs serve`` (one worker per core unless told otherwise) from this checkout or another one.
``load`` drives keep-alive HTTP/1.1 clients, each sending its own request in a loop, and times
the answers that have the expected status. ``CpuMeter`` reads what each process tree spent
from /proc.
"""

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hsm_bench import CORES  # noqa: E402
from tests.fixtures.ports import wait_for_port  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402

if TYPE_CHECKING:
    from hsm.authority import CertificateAuthority


def open_authority(env: Mapping[str, str]) -> "CertificateAuthority":
    """The CA that the quickstart settings ``env`` name, opened in this process (a session
    pool of two per core)."""
    from hsm.authority import AuthorityConfig, CertificateAuthority
    from hsm.connection import HsmConfig

    return CertificateAuthority(AuthorityConfig(
        hsm=HsmConfig(module_path=env["MF_CERTS_HSM_MODULE"],
                      pin=Path(env["MF_CERTS_HSM_PIN_FILE"]).read_text(),
                      token_label="certs", pool_size=CORES * 2),
        ca_certificate_path=env["MF_CERTS_SIGN_CA_PATH"]))


def http_request(method: str, path: str, *, token: str = "", body: bytes = b"",
                 content_type: str = "application/json") -> bytes:
    """One HTTP/1.1 request as bytes, to be sent again and again on a keep-alive connection."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if body:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


Check = Callable[[bytes, bytes], bool]


def status_is(expect: int) -> Check:
    """An answer counts when its status is ``expect``."""
    wanted = str(expect).encode()
    return lambda status_line, _body: status_line.split(b" ", 2)[1:2] == [wanted]


async def _client(port: int, requests: list[bytes], first: int, check: Check, stop: float,
                  latencies: list[float], failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = first
    while time.monotonic() < stop:
        started = time.perf_counter()
        writer.write(requests[sent % len(requests)])
        sent += 1
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        if check(status_line, body):
            latencies.append(time.perf_counter() - started)
        else:
            failures.append(1)
    writer.close()


async def load(port: int, requests: list[bytes], clients: int, seconds: float, check: Check
               ) -> dict[str, float]:
    """``clients`` connections for ``seconds``, client n starting at request n (each sends the
    list in turn): count, rate, p50 and p99 (ms) of the answers ``check`` accepts, failures."""
    latencies: list[float] = []
    failures: list[int] = []
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, requests, n, check, stop, latencies, failures)
                           for n in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    return {
        "count": count,
        "rate": count / elapsed,
        "p50": statistics.median(latencies) * 1000 if count else 0.0,
        "p99": latencies[max(int(count * 0.99) - 1, 0)] * 1000 if count else 0.0,
        "failures": len(failures),
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its living descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue  # it exited meanwhile
        total += (int(stat[11]) + int(stat[12])) / ticks
        for task in tasks:
            try:
                stack.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return total


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


def worker_pids(service: int) -> list[int]:
    """The HTTP worker processes of a ``certs serve``."""
    pids = []
    for pid in descendants(service):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server.workers" in command:
            pids.append(pid)
    return pids


class CpuMeter:
    """CPU time per component over a load phase, to show where the cores go."""

    def __init__(self, components: dict[str, int]) -> None:
        self.components = components

    def snapshot(self) -> dict[str, float]:
        taken = {name: tree_cpu_seconds(pid) for name, pid in self.components.items()}
        taken["load client"] = time.process_time()
        return taken

    @staticmethod
    def per_request(before: dict[str, float], after: dict[str, float], done: float
                    ) -> dict[str, float]:
        """Milliseconds of CPU per request, by component."""
        return {name: (after[name] - before[name]) * 1000 / max(done, 1) for name in before}

    @staticmethod
    def describe(spent: dict[str, float], what: str = "certificate") -> str:
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in spent.items())
        total = sum(spent.values())
        return (f"CPU ms per {what}: {parts}; total {total:.2f} "
                f"(at most {CORES * 1000 / total:,.0f}/s on {CORES} cores)")


@dataclass
class BenchStack:
    """Token and CA, PostgreSQL and the identity provider; ``serve`` starts the service."""

    port: int
    things_port: int
    auth_port: int
    prefix: str = "certs-bench-"
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    things: list[str] = field(default_factory=list)
    cluster: PostgresCluster | None = None
    identity: "subprocess.Popen[bytes] | None" = None
    services: "list[subprocess.Popen[bytes]]" = field(default_factory=list)

    def __enter__(self) -> Self:
        from devtools.quickstart import prepare

        state = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.env = {**os.environ, **prepare(state)}
        self.env.update({
            "MF_THINGS_GRPC_URL": f"127.0.0.1:{self.things_port}",
            "MF_AUTH_GRPC_URL": f"127.0.0.1:{self.auth_port}",
            "MF_CERTS_HTTP_PORT": str(self.port), "MF_CERTS_LOG_LEVEL": "error",
            "MF_CERTS_WORKERS": str(CORES)})
        self.env.pop("MF_JAEGER_URL", None)
        os.environ["SOFTHSM2_CONF"] = self.env["SOFTHSM2_CONF"]
        try:
            self.cluster = PostgresCluster().start()
            self.env["MF_CERTS_DB_URL"] = self.cluster.url(
                self.cluster.create_database("bench"))
            identity_file = state / "identity.json"
            self.identity = subprocess.Popen(
                [sys.executable, "-m", "devtools.identity.provider", "--file",
                 str(identity_file), "--demo", "--things-addr", self.env["MF_THINGS_GRPC_URL"],
                 "--auth-addr", self.env["MF_AUTH_GRPC_URL"], "--log-level", "error"],
                env={**self.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                stdout=subprocess.DEVNULL)
            wait_for_port(self.things_port, 30, process=self.identity)
            demo = json.loads(identity_file.read_text())
        except BaseException:
            self.close()
            raise
        self.token = demo["users"][0]["token"]
        self.things = [thing["id"] for thing in demo["things"]]
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for service in list(self.services):  # stop() takes each out of the list
            self.stop(service)
        if self.identity is not None:
            self.identity.terminate()
            self.identity.wait(timeout=30)
        if self.cluster is not None:
            self.cluster.cleanup()

    def serve(self, extra: dict[str, str] | None = None, code: Path = ROOT
              ) -> "subprocess.Popen[bytes]":
        """``certs serve`` from ``code`` with ``extra`` settings (``MF_CERTS_HTTP_PORT`` among
        them for a second service beside the first), once its workers are up."""
        env = {**self.env, **(extra or {}), "PYTHONPATH": str(code)}
        workers = int(env["MF_CERTS_WORKERS"])
        process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env,
                                   cwd=code)
        self.services.append(process)
        wait_for_port(int(env["MF_CERTS_HTTP_PORT"]), 90, process=process)
        deadline = time.monotonic() + 60
        while len(worker_pids(process.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        return process

    def stop(self, process: "subprocess.Popen[bytes]") -> None:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        if process in self.services:
            self.services.remove(process)

    def components(self, service: "subprocess.Popen[bytes]") -> dict[str, int]:
        """Process trees to meter: the service, the identity provider and PostgreSQL."""
        assert self.identity is not None and self.cluster is not None
        assert self.cluster.pid is not None
        return {"service": service.pid, "identity": self.identity.pid,
                "PostgreSQL": self.cluster.pid}

    def authority(self) -> "CertificateAuthority":
        """The service's CA opened in this process (for the in-process ceilings)."""
        return open_authority(self.env)

    def issue(self, thing: str, key_type: str = "ec", bits: int = 256) -> dict[str, str]:
        """One certificate issued over HTTP (its JSON answer)."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = json.dumps({"thing_id": thing, "key_type": key_type, "key_bits": bits,
                           "ttl": "100h"})
        connection.request("POST", "/certs", body, {"Authorization": f"Bearer {self.token}",
                                                     "Content-Type": "application/json"})
        response = connection.getresponse()
        payload: dict[str, str] = json.loads(response.read())
        assert response.status == 201, payload
        return payload
