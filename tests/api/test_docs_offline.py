"""The docs page works with no network at all: ``certs serve`` and headless Chromium run in a
network namespace of their own with only loopback, so any asset from a CDN could not load;
the operations are listed in the DOM only when Swagger UI came from the service itself."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import ROOT, serve_env

OPERATIONS = ["issueCert", "viewCert", "renewCert", "rotateCert", "revokeCert", "downloadCert",
              "listSerials", "listSerialsSvc", "listCerts", "getCrl", "getCrlPem", "getCa",
              "getCaPem", "health", "metrics"]


def _render(tmp_path: Path, identity: IdentityFixture, path: str) -> str:
    assert shutil.which("chromium"), "Debian package chromium is missing (scripts/install)"
    env = serve_env(tmp_path, identity, workers=1)
    log = tmp_path / "serve.log"
    result = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "tests.api.offline_page", json.dumps(env),
         path, str(log)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr + log.read_text(errors="replace")[-3000:]
    return result.stdout


@pytest.mark.parametrize("path", ["/schema"])
def test_docs_page_lists_the_operations_without_network(tmp_path: Path,
                                                        identity: IdentityFixture,
                                                        path: str) -> None:
    dom = _render(tmp_path, identity, path)
    assert "swagger-ui" in dom, dom[-2000:]
    shown = set(re.findall(r'id="operations-[^"]*?-(\w+)"', dom))
    assert set(OPERATIONS) <= shown, sorted(shown)
    # Every asset the page names is the service's own.
    assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', dom)
    assert all(url.startswith(("/schema/", "#")) for url in assets
               if not url.startswith("data:")), assets
    assert "/certs/{serial}/rotate" in dom
