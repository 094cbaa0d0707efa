"""SPEC section 3 through a real ``certs serve``, with curl and openssl as clients: serials as
``openssl x509 -serial`` or a browser spell them, HEAD on the GET routes (not on /download),
and 415 for issue and rotate without a Content-Type header."""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from repository._rows import lookup_serial
from repository.errors import NotFound
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, identity: IdentityFixture
           ) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("serials")
    served = start_serve(serve_env(tmp_path, identity, workers=1), tmp_path)
    try:
        yield served
    finally:
        stop_serve(served.process)


def _curl(served: Served, *args: str) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one curl call (a binary body as latin-1 text)."""
    result = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "30", *args[:-1],
         f"http://127.0.0.1:{served.port}{args[-1]}"],
        capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body.decode("latin-1")


def _bearer(identity: IdentityFixture) -> list[str]:
    return ["-H", f"Authorization: Bearer {identity.alice.token}"]


@pytest.fixture(scope="module")
def issued(served: Served, identity: IdentityFixture) -> dict[str, str]:
    body = json.dumps({"thing_id": identity.thing_a1.id, "key_type": "ec"})
    status, _, text = _curl(served, *_bearer(identity), "-H", "Content-Type: application/json",
                            "--data-binary", body, "/certs")
    assert status == 201, text
    issued: dict[str, str] = json.loads(text)
    return issued


def _openssl_serial(certificate_pem: str, tmp_path: Path) -> str:
    path = tmp_path / "cert.pem"
    path.write_text(certificate_pem)
    out = subprocess.run(["openssl", "x509", "-serial", "-noout", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("serial=")
    return out.strip().removeprefix("serial=")


def _colons(serial: str) -> str:
    padded = serial if len(serial) % 2 == 0 else "0" + serial
    return ":".join(padded[i:i + 2] for i in range(0, len(padded), 2)).upper()


def test_serial_as_openssl_and_browsers_spell_it(served: Served, identity: IdentityFixture,
                                                 issued: dict[str, str], tmp_path: Path) -> None:
    serial = issued["serial"]
    spelled = _openssl_serial(issued["certificate"], tmp_path)
    assert spelled.lower().lstrip("0") == serial and spelled != serial  # upper case at least
    for form in (spelled, "00" + spelled, _colons(serial), "0" + serial.upper(), serial):
        status, _, text = _curl(served, *_bearer(identity), f"/certs/{form}")
        assert status == 200, (form, text)
        assert json.loads(text)["serial"] == serial


def test_serial_normalisation() -> None:
    assert lookup_serial("0D:28:A6") == "d28a6"
    assert lookup_serial("000D28a6") == "d28a6"
    # a decimal serial imported from the Go service is found by exactly its own string
    assert lookup_serial("302182752101398912367127823405934591001") == \
        "302182752101398912367127823405934591001"
    assert lookup_serial("00") == "0"
    for bad in ("", ":", "xyz", "12-34"):
        with pytest.raises(NotFound):
            lookup_serial(bad)


def _head_routes(identity: IdentityFixture, serial: str) -> list[tuple[list[str], str]]:
    thing = identity.thing_a1.id
    user = _bearer(identity)
    return [
        (user, f"/certs/{serial}"),
        (user, f"/things/{thing}/serials"),
        (user, f"/svccerts/things/{thing}/serials"),
        (user, f"/things/{thing}/certs"),
        ([], "/crl"),
        ([], "/crl.pem"),
        ([], "/health"),
    ]


def test_head_on_get_routes(served: Served, identity: IdentityFixture,
                            issued: dict[str, str]) -> None:
    for headers, path in _head_routes(identity, issued["serial"]):
        get_status, get_headers, get_body = _curl(served, *headers, path)
        status, head_headers, body = _curl(served, "-I", *headers, path)
        assert (status, body) == (get_status, ""), path
        assert status == 200, path
        assert head_headers["content-type"] == get_headers["content-type"], path
        if path.startswith("/crl"):  # the same bytes, so the same length
            assert head_headers["content-length"] == get_headers["content-length"], path
            assert int(head_headers["content-length"]) == len(get_body.encode("latin-1"))
            assert head_headers["etag"] == get_headers["etag"]
    status, _, _ = _curl(served, "-I", "-H", f"Authorization: Thing {identity.thing_a1.key}",
                         f"/certs/{issued['serial']}/download")
    assert status == 405
    # a HEAD did not download it: the key is still there for the device
    status, _, text = _curl(served, "-H", f"Authorization: Thing {identity.thing_a1.key}",
                            f"/certs/{issued['serial']}/download")
    assert status == 200 and json.loads(text)["private_key"], text


def test_issue_and_rotate_without_content_type(served: Served, identity: IdentityFixture,
                                               issued: dict[str, str]) -> None:
    body = json.dumps({"thing_id": identity.thing_a1.id, "key_type": "ec"})
    no_type = ["-H", "Content-Type:"]  # curl -d would send application/x-www-form-urlencoded
    for path in ("/certs", f"/certs/{issued['serial']}/rotate"):
        status, _, text = _curl(served, *_bearer(identity), *no_type, "--data-binary", body,
                                "-X", "POST", path)
        assert (status, json.loads(text)) == (415, {"error": "unsupported content type"}), path
        status, _, text = _curl(served, *_bearer(identity), "--data-binary", body, path)
        assert (status, json.loads(text)) == (415, {"error": "unsupported content type"}), path
    status, _, text = _curl(served, *_bearer(identity), f"/certs/{issued['serial']}")
    assert status == 200  # nothing was rotated
