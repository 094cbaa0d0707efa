"""``python -m scheduler`` started while the SoftHSM2 token folder is away does not die (its
supervisor in ``certs serve`` would restart it in a loop, with a growing pause): it waits,
probing the HSM in a child process, and once the token is back it exits with EXIT_REPLACE (75)
so that its supervisor starts a new one at once; that one runs."""

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from authority.fitness import EXIT_REPLACE
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import ROOT, serve_env


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_scheduler_without_its_hsm_waits_then_asks_to_be_replaced(
        tmp_path: Path, identity: IdentityFixture) -> None:
    env = serve_env(tmp_path, identity, workers=1)
    migrated = subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    state = tmp_path / "state"
    shutil.move(state / "tokens", state / "tokens-away")
    log = tmp_path / "scheduler.log"
    with log.open("wb") as output:
        waiting = subprocess.Popen([sys.executable, "-m", "scheduler"], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: "scheduler.waiting_for_hsm" in log.read_text(), 60), \
            log.read_text()
        time.sleep(5.0)  # several probes fail meanwhile
        assert waiting.poll() is None, log.read_text()

        shutil.move(state / "tokens-away", state / "tokens")
        assert waiting.wait(timeout=60) == EXIT_REPLACE, log.read_text()
        assert "hsm.usable" in log.read_text()
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()

    with (tmp_path / "scheduler-2.log").open("wb") as output:
        running = subprocess.Popen([sys.executable, "-m", "scheduler"], cwd=ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        time.sleep(8.0)
        assert running.poll() is None, (tmp_path / "scheduler-2.log").read_text()
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=30) == 0
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    text = log.read_text() + (tmp_path / "scheduler-2.log").read_text()
    assert "Traceback" not in text
    assert env["MF_CERTS_HSM_PIN"] not in text
