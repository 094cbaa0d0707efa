"""Start and stop (SPEC section 11): SIGTERM or SIGINT to ``scripts/run`` or to ``certs serve``
stops every process it started, within seconds and without a traceback; a second service on a
busy port refuses to start with one line; MF_CERTS_HTTP_HOST chooses the address; the operator's
command line works on the quickstart's state with nothing exported by hand."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import wait_for_port
from tests.fixtures.process_tree import command_line, descendants, wait_gone
from tests.fixtures.serve import (
    ROOT,
    Served,
    serve_env,
    start_run,
    start_serve,
    stop_serve,
    user_env,
)

STOP_SECONDS = 15  # "within seconds": the run command and every child gone


@dataclass
class Run:
    process: "subprocess.Popen[bytes]"
    port: int
    state: Path
    log: Path
    printed: dict[str, str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start_run(tmp_path: Path) -> Run:
    log = tmp_path / "run.log"
    process, port = start_run(tmp_path / "state", log)
    run = Run(process, port, tmp_path / "state", log, {})
    try:
        wait_for_port(port, 240, process=process, output=run.output)
        for line in run.output().splitlines():
            if line.startswith("demo user token: "):
                run.printed["token"] = line.split(": ", 1)[1].strip()
            elif line.startswith("demo thing: "):
                words = line.split()
                run.printed["thing"], run.printed["key"] = words[2], words[5].rstrip(")")
    except BaseException:
        _kill_group(process)
        raise
    return run


def _kill_group(process: "subprocess.Popen[str] | subprocess.Popen[bytes]") -> None:
    """Clean-up after a failed test: SIGKILL to the group and to every descendant."""
    for pid in descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    started = _start_run(tmp_path)
    try:
        yield started
    finally:
        if started.process.poll() is None or descendants(started.process.pid):
            _kill_group(started.process)


def _tree(pid: int, expected: dict[str, int], timeout: float = 60) -> set[int]:
    """The descendants of `pid` once each command fragment of `expected` runs that many times."""
    deadline = time.monotonic() + timeout
    while True:
        tree = descendants(pid)
        lines = [command_line(child) for child in tree]
        counts = {part: sum(part in line for line in lines) for part in expected}
        if counts == expected or time.monotonic() > deadline:
            assert counts == expected, lines
            return tree
        time.sleep(0.2)


RUN_TREE = {"devtools.identity.provider": 1, "nats-server": 1, "server.cli serve": 1,
            "server.workers": 2, "-m scheduler": 1}
SERVE_TREE = {"server.workers": 2, "-m scheduler": 1}


def _assert_clean_stop(process: "subprocess.Popen[str] | subprocess.Popen[bytes]",
                       tree: set[int], output: str, port: int) -> None:
    assert process.wait(timeout=STOP_SECONDS) == 0, output[-3000:]
    left = wait_gone(tree, 5)
    assert not left, [command_line(pid) for pid in left]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert "restarting" not in output, output[-3000:]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "something still listens"


def test_sigterm_to_run_stops_every_process(run: Run) -> None:
    tree = _tree(run.process.pid, RUN_TREE)
    os.kill(run.process.pid, signal.SIGTERM)
    _assert_clean_stop(run.process, tree, run.output(), run.port)


def test_ctrl_c_on_run_stops_every_process(run: Run) -> None:
    tree = _tree(run.process.pid, RUN_TREE)
    os.killpg(run.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _assert_clean_stop(run.process, tree, run.output(), run.port)


def test_killed_run_leaves_no_orphan(run: Run) -> None:
    tree = _tree(run.process.pid, RUN_TREE)
    os.kill(run.process.pid, signal.SIGKILL)
    run.process.wait(timeout=10)
    left = wait_gone(tree, STOP_SECONDS)
    assert not left, [command_line(pid) for pid in left]


def test_cli_works_on_the_quickstart_state(run: Run) -> None:
    """Nothing exported: `certs --state` (or CERTS_STATE) reads state/certs.env."""
    settings = run.state / "certs.env"
    assert settings.stat().st_mode & 0o777 == 0o600
    assert "MF_CERTS_HSM_PIN_FILE=" in settings.read_text()
    with httpx.Client(base_url=f"http://127.0.0.1:{run.port}", timeout=30) as client:
        issued = client.post("/certs", json={"thing_id": run.printed["thing"], "key_type": "ec"},
                             headers={"Authorization": f"Bearer {run.printed['token']}"})
    assert issued.status_code == 201, issued.text
    serial = issued.json()["serial"]

    def certs(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / ".venv" / "bin" / "certs"), *args], cwd=run.state.parent,
                              env={**user_env(), **env}, capture_output=True, text=True,
                              timeout=120)

    shown = certs("--state", str(run.state), "ca", "show")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["subject"].startswith("Common Name: Certs Quickstart CA")
    listed = certs("list", run.printed["thing"], CERTS_STATE=str(run.state))
    assert listed.returncode == 0, listed.stderr
    assert serial in listed.stdout
    missing = certs("--state", str(run.state.parent / "nowhere"), "ca", "show")
    assert missing.returncode == 1
    assert len(missing.stderr.strip().splitlines()) == 1 and "certs.env" in missing.stderr


# ---- certs serve on its own ------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, identity: IdentityFixture) -> Iterator[Served]:
    served = start_serve(serve_env(tmp_path, identity, workers=2), tmp_path)
    try:
        yield served
    finally:
        stop_serve(served.process)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_serve_stops_workers_and_scheduler(served: Served, number: int) -> None:
    tree = _tree(served.process.pid, SERVE_TREE)
    if number == signal.SIGINT:
        os.killpg(served.process.pid, number)  # Ctrl-C in the terminal running certs serve
    else:
        os.kill(served.process.pid, number)
    _assert_clean_stop(served.process, tree, served.output(), served.port)


def _serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", "serve"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _listening_workers(port: int) -> int:
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            count += 1
    return count


def test_second_service_on_the_port_refuses_to_start(served: Served, tmp_path: Path,
                                                      identity: IdentityFixture) -> None:
    _tree(served.process.pid, SERVE_TREE)
    deadline = time.monotonic() + 30
    while _listening_workers(served.port) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _listening_workers(served.port) == 2  # the workers share the port
    (tmp_path / "second").mkdir()
    second = serve_env(tmp_path / "second", identity, workers=2,
                       extra={"MF_CERTS_HTTP_PORT": str(served.port)})
    line = _one_line(_serve_once(second))
    assert line.startswith("certs: port ") and "MF_CERTS_HTTP_PORT" in line, line
    assert "another certs service" in line
    # With another temporary folder the lock is not shared: the bind probe still refuses.
    other_tmp = tmp_path / "other-tmp"
    other_tmp.mkdir()
    line = _one_line(_serve_once({**second, "TMPDIR": str(other_tmp)}))
    assert "MF_CERTS_HTTP_PORT" in line and "already in use" in line, line
    assert _listening_workers(served.port) == 2
    assert served.process.poll() is None


def test_port_held_by_another_program(tmp_path: Path, identity: IdentityFixture) -> None:
    env = serve_env(tmp_path, identity, workers=2)
    with socket.socket() as other:
        other.bind(("127.0.0.1", int(env["MF_CERTS_HTTP_PORT"])))
        other.listen()
        line = _one_line(_serve_once(env))
    assert line == (f"certs: port {env['MF_CERTS_HTTP_PORT']} (MF_CERTS_HTTP_PORT) on 0.0.0.0 "
                    "is already in use by another process")


def test_http_host_chooses_the_address(tmp_path: Path, identity: IdentityFixture) -> None:
    env = serve_env(tmp_path, identity, workers=1, extra={"MF_CERTS_HTTP_HOST": "127.0.0.1"})
    served = start_serve(env, tmp_path)
    try:
        listening = {line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[3] == "0A"}
        assert f"0100007F:{served.port:04X}" in listening
        assert f"00000000:{served.port:04X}" not in listening
        with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
            assert client.get("/health").status_code == 200
    finally:
        stop_serve(served.process)
