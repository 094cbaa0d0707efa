"""Run inside a network namespace that has only loopback: start ``certs serve`` there, load
its docs page in headless Chromium and print the rendered DOM (``python -m``, see
test_docs_offline.py)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from tests.fixtures.ports import wait_for_port
from tests.fixtures.serve import ROOT, stop_serve

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--virtual-time-budget=5000",
                  "--dump-dom"]


def main() -> None:
    env = json.loads(sys.argv[1])
    path = sys.argv[2]
    log = open(sys.argv[3], "wb")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        port = int(env["MF_CERTS_HTTP_PORT"])
        wait_for_port(port, 60.0, process=server)
        page = subprocess.run(
            [shutil.which("chromium") or "chromium", *CHROMIUM_FLAGS,
             f"--user-data-dir={profile}", f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": profile})
        sys.stdout.write(page.stdout)
        sys.stderr.write(page.stderr[-4000:])
    finally:
        stop_serve(server)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
