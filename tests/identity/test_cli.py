"""The provider's command line, reload, and in-process start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from authority.identity import AuthClient, AuthenticationFailed, ThingsClient
from devtools.identity.directory import Directory
from devtools.identity.provider import READY_PREFIX, start_provider
from tests.fixtures.identity import (
    REPO_ROOT,
    IdentityFixture,
    ProviderProcess,
    free_port,
    identity_file_content,
)

PROVIDER = [sys.executable, "-m", "devtools.identity.provider"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO_ROOT)
    return e


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PROVIDER, *args],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_demo_quickstart(tmp_path: Path) -> None:
    file = tmp_path / "identity.json"
    things_addr, auth_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            *PROVIDER,
            "--file",
            str(file),
            "--demo",
            "--things-addr",
            things_addr,
            "--auth-addr",
            auth_addr,
        ],
        cwd=REPO_ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.to_thread(proc.stdout.readline)
        ready = await asyncio.to_thread(proc.stdout.readline)
        assert first.startswith("wrote demo identity to")
        assert ready.strip() == (
            f"{READY_PREFIX} things={things_addr} auth={auth_addr} users=1 things=3"
        )
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        data = json.loads(file.read_text())
        token = data["users"][0]["token"]
        assert token not in first + ready
        thing = data["things"][0]
        async with ThingsClient(things_addr) as things, AuthClient(auth_addr) as auth:
            await things.can_access(token, thing["id"], "editor")
            assert await things.identify_thing(thing["key"]) == thing["id"]
            assert (await auth.identify_user(token)).email == "demo@example.com"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 10) == 0
        # --demo keeps an existing file.
        before = file.read_text()
        proc2 = subprocess.Popen(
            [
                *PROVIDER,
                "--file",
                str(file),
                "--demo",
                "--things-addr",
                things_addr,
                "--auth-addr",
                things_addr,
            ],
            cwd=REPO_ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc2.stdout is not None
        line = await asyncio.to_thread(proc2.stdout.readline)
        assert line.startswith(f"{READY_PREFIX} things={things_addr} auth={things_addr}")
        proc2.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(proc2.wait, 10) == 0
        assert file.read_text() == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_invalid_file_exits_with_a_message(tmp_path: Path) -> None:
    data = identity_file_content()
    users = data["users"]
    assert isinstance(users, list)
    users.append({"id": "dup", "email": "d@example.com", "token": users[0]["token"]})
    file = tmp_path / "identity.json"
    file.write_text(json.dumps(data))
    res = run("--file", str(file), "--things-addr", f"127.0.0.1:{free_port()}")
    assert res.returncode == 1
    assert "error:" in res.stderr and "same token" in res.stderr
    assert users[0]["token"] not in res.stderr + res.stdout
    res = run("--file", str(tmp_path / "missing.json"))
    assert res.returncode == 1 and "cannot read" in res.stderr


def test_port_in_use_exits(identity: IdentityFixture) -> None:
    """A second provider on a port in use fails instead of sharing it (no SO_REUSEPORT)."""
    res = run("--file", str(identity.file), "--things-addr", identity.things_url)
    assert res.returncode == 1
    assert "cannot listen" in res.stderr


def test_tls_options_go_together(identity: IdentityFixture) -> None:
    res = run("--file", str(identity.file), "--tls-cert", "x.pem")
    assert res.returncode == 2
    assert "--tls-key" in res.stderr


def test_package_entry_point() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "devtools.identity", "--help"],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0
    assert "Not for multi-user production" in res.stdout


async def test_sighup_reloads(tmp_path: Path) -> None:
    file = tmp_path / "identity.json"
    data = identity_file_content()
    file.write_text(json.dumps(data))
    proc = ProviderProcess(file, free_port(), free_port(), workdir=tmp_path)
    proc.start()
    try:
        async with AuthClient(proc.auth_url) as auth:
            with pytest.raises(AuthenticationFailed):
                await auth.identify_user("tok-dave-new")
            users = data["users"]
            assert isinstance(users, list)
            users.append({"id": "dave", "email": "dave@example.com", "token": "tok-dave-new"})
            file.write_text(json.dumps(data))
            proc.reload()
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert (await auth.identify_user("tok-dave-new")).id == "dave"
                    break
                except AuthenticationFailed:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            # A broken file is refused and the last good content keeps being served.
            file.write_text("{broken")
            proc.reload()
            await asyncio.sleep(0.5)
            assert proc.running
            assert (await auth.identify_user("tok-dave-new")).id == "dave"
    finally:
        proc.stop()
    assert "identity file not reloaded" in (tmp_path / "provider-1.err").read_text()


async def test_in_process_provider() -> None:
    directory = Directory.from_dict(identity_file_content())
    running = await start_provider(directory, "127.0.0.1:0", "127.0.0.1:0")
    try:
        # The same address twice is one listener serving both services.
        assert running.things_addr == running.auth_addr != "127.0.0.1:0"
        alice = next(u for u in directory.users.values() if u.email == "alice@example.com")
        async with AuthClient(running.auth_addr) as auth, ThingsClient(running.things_addr) as th:
            assert (await auth.identify_user(alice.token)).id == alice.id
            key = next(t.key for t in directory.things.values() if t.owner == alice.id)
            await th.identify_thing(key)
    finally:
        await running.stop(None)
