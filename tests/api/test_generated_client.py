"""A client generated from the document by openapi-python-client (into a temporary directory,
during the test) issues, views, lists, downloads and revokes a certificate on a real
``certs serve``; the certificate it gets is checked with openssl against the CA chain."""

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served

PACKAGE = "certs_generated_client"


@pytest.fixture(scope="module")
def generated(document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[ModuleType]:
    where = tmp_path_factory.mktemp("generated")
    (where / "openapi.json").write_text(json.dumps(document))
    (where / "config.json").write_text(json.dumps({"post_hooks": []}))
    made = subprocess.run(
        [str(Path(sys.executable).with_name("openapi-python-client")), "generate",
         "--path", "openapi.json", "--meta", "none", "--output-path", PACKAGE,
         "--config", "config.json"],
        cwd=where, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert made.returncode == 0, made.stdout + made.stderr
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [name for name in sys.modules if name.startswith(PACKAGE)]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def test_generated_client_issues_views_and_revokes(generated: ModuleType, base_url: str,
                                                   served: Served, identity: IdentityFixture,
                                                   tmp_path: Path) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    thing = identity.things["thing-a1"]
    user = generated.AuthenticatedClient(base_url=base_url, token=identity.alice.token,
                                         timeout=httpx.Timeout(30.0))
    body = models.IssueCertBody(thing_id=thing.id, key_type=models.IssueCertBodyKeyType.EC,
                                key_bits=models.IssueCertBodyKeyBits.VALUE_384, ttl="24h")
    issued = _api("certs.issue_cert").sync_detailed(client=user, body=body)
    assert issued.status_code == 201, issued.content
    assert isinstance(issued.parsed, models.IssueBody)
    assert (issued.parsed.thing_id, issued.parsed.key_bits) == (thing.id, 384)
    assert issued.parsed.private_key_type == models.IssueBodyPrivateKeyType.EC
    serial = issued.parsed.serial

    certificate = tmp_path / "cert.pem"
    certificate.write_text(issued.parsed.certificate)
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(served.signing_ca),
                               "-purpose", "sslclient", str(certificate)],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    viewed = _api("certs.view_cert").sync(serial, client=user)
    assert isinstance(viewed, models.ViewBody)
    assert (viewed.serial, viewed.downloaded, viewed.key_type) == (
        serial, False, models.ViewBodyKeyType.EC)

    listed = _api("things.list_serials").sync(thing.id, client=user, limit=200)
    assert isinstance(listed, models.SerialsBody) and serial in listed.serials

    device = generated.AuthenticatedClient(base_url=base_url, token=thing.key, prefix="Thing")
    downloaded = _api("certs.download_cert").sync(serial, client=device)
    assert isinstance(downloaded, models.IssueBody)
    assert downloaded.private_key == issued.parsed.private_key
    again = _api("certs.download_cert").sync(serial, client=device)
    assert isinstance(again, models.ErrorBody) and again.error == "certificate already downloaded"

    revoked = _api("certs.revoke_cert").sync(serial, client=user)
    assert isinstance(revoked, models.RevokeBody)
    assert revoked.revocation_time == revoked.RevocationTime
    gone = _api("certs.view_cert").sync_detailed(serial, client=user)
    assert gone.status_code == 404
    assert isinstance(gone.parsed, models.ErrorBody) and gone.parsed.error == "entity not found"
