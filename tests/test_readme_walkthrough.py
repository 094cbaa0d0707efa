"""The README's walkthrough, run literally: the command lines between ``<!-- walkthrough -->``
and ``<!-- /walkthrough -->`` in README.md, given to bash as they are written, against a
service started by ``scripts/run``, from a folder holding its ``state`` (and ``.venv``) as a
clone's root does."""

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.fixtures.ports import wait_for_port
from tests.fixtures.serve import start_run, user_env

ROOT = Path(__file__).resolve().parents[1]
# What the suite's own fixtures put in the environment: a user's shell has none of it.
README = ROOT / "README.md"
BLOCK = re.compile(r"<!-- walkthrough -->\s*```(?:sh|bash|console)?\n(.*?)```\s*"
                   r"<!-- /walkthrough -->", re.DOTALL)


def walkthrough(text: str) -> str:
    """The shell block between the two markers (exactly one)."""
    blocks = BLOCK.findall(text)
    assert len(blocks) == 1, "README.md needs one ```sh block between <!-- walkthrough --> " \
                             "and <!-- /walkthrough -->"
    block: str = blocks[0]
    return block


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A folder laid out like the clone's root (state/ from scripts/run, .venv), and the port."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    log = tmp_path / "run.log"
    process, port = start_run(tmp_path / "state", log)
    try:
        wait_for_port(port, 240, process=process, output=log.read_text)
        yield tmp_path, port
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_readme_walkthrough_runs_as_written(clone: tuple[Path, int]) -> None:
    folder, port = clone
    block = walkthrough(README.read_text())
    env = user_env()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stdout + result.stderr
    assert "-----BEGIN EC PRIVATE KEY-----" in result.stdout  # the device's download

    # What the walkthrough did, read back from the responses it kept: three serials (issued,
    # renewed, rotated), each a new one, all revoked in the end, all in the CRL.
    serials = [json.loads((folder / name).read_text())["serial"]
               for name in ("issued.json", "renewed.json", "rotated.json")]
    assert len(set(serials)) == 3, serials
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        crl = x509.load_der_x509_crl(client.get("/crl").content)
    revoked = {format(entry.serial_number, "x") for entry in crl}
    assert set(serials) <= revoked, (serials, revoked)
