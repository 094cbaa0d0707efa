"""Schemathesis against a real ``certs serve``: every operation of the document (examples,
coverage, fuzzing and the stateful phase along the document's links), positive and negative
data, a valid user token and thing keys. It must find no 5xx and no answer the document does
not describe: status, content type, headers, body, `Allow` on 405/OPTIONS, and (a check of
ours, st_hooks.py) the `{"error"}` message among those listed for the operation and status."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import ROOT

MAX_EXAMPLES = 40
MIN_REQUESTS = 1000
# Every check schemathesis has, but three that do not apply here, each for a stated reason.
CONFIG = """\
[auth.openapi.Bearer]
bearer = "{token}"
[auth.openapi.ThingKey]
api_key = "Thing {key}"
[auth.openapi.ExternalKey]
api_key = "External {external_key}"

# A schema-valid body can still be refused for the service's state (SPEC 3): a ttl that ends
# after the CA certificate, a thing the token may not edit, a renewal before the window, a CSR
# whose signature does not verify; such a refusal is a documented 400/403.
[checks.positive_data_acceptance]
enabled = false

# A well-formed but unknown token on an unknown serial gets 404 before the token is checked:
# the things service authorizes per thing, and the thing is known only from the record (the
# Go service's order, kept by SPEC 3). Reported in the closing note of issue 11.
[checks.ignored_auth]
enabled = false

# Renew, rotate and revoke retire the certificate they act on (SPEC 3): a later link from the
# issue answer to that serial is rightly 404, which this check takes for a lost resource.
[checks.ensure_resource_availability]
enabled = false

# The stateful phase follows the document's links only: guessing from paths would take rotate
# (POST /certs/{{serial}}/rotate) for a child of a certificate that it has in fact replaced.
[phases.stateful.inference]
algorithms = []

# RFC 6960: a malformed OCSP request is answered with an OCSP error response (HTTP 200).
[[operations]]
include-path = "/ocsp"
include-method = "POST"
[operations.checks.negative_data_rejection]
enabled = false
# GET /ocsp (no request: RFC 6960 malformedRequest) is served but left out of the document by
# server/http/ocsp.py; until it is documented, undeclared-method probes of /ocsp see its 200.
[operations.checks.unsupported_method]
enabled = false
"""


def _config(tmp_path: Path, identity: IdentityFixture) -> Path:
    thing = identity.things["thing-a1"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(token=identity.alice.token, key=thing.key,
                                    external_key=thing.external_key))
    return config


def test_schemathesis_finds_nothing_undocumented(base_url: str, identity: IdentityFixture,
                                                 tmp_path: Path) -> None:
    har, report = tmp_path / "run.har", tmp_path / "run.json"
    command = [
        str(Path(sys.executable).with_name("st")), "--config-file",
        str(_config(tmp_path, identity)), "run", f"{base_url}/openapi.json",
        "--max-examples", str(MAX_EXAMPLES), "--seed", "11", "--workers", "1", "--no-color",
        "--generation-database", "none", "--suppress-health-check", "all",
        "--request-timeout", "30", "--report", "har,json", "--report-har-path", str(har),
        "--report-json-path", str(report),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.st_hooks",
                              "PYTHONPATH": str(ROOT)})
    output = run.stdout[-8000:] + run.stderr[-2000:]
    assert run.returncode == 0, output
    summary = json.loads(report.read_text())
    assert summary["failures"] == [] and summary["errors"] == [], output
    assert summary["operations"]["tested"] == summary["operations"]["total"], output
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = Counter(entry["response"]["status"] for entry in entries)
    methods = Counter(entry["request"]["method"] for entry in entries)
    print(f"schemathesis: {len(entries)} requests, {summary['test_cases']['generated']} test "
          f"cases, {summary['running_time']:.0f} s; statuses {sorted(statuses.items())}; "
          f"methods {sorted(methods.items())}")
    assert len(entries) >= MIN_REQUESTS
    assert not [status for status in statuses if status >= 500], statuses
