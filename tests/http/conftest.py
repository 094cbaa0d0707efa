"""The real app over a real token, store and identity provider, driven in-process.

Fixtures:

- `components` / `client` (function): the app over a fresh database of each backend
  (`db_url` is parametrized sqlite/postgresql).
- `bearer`: `bearer("alice")` is the Authorization header of a test user.
- `api` (function): an `Api` over `client` (both backends) whose responses are checked for
  leaks (stack traces, the PIN, tokens, private keys outside the routes that return them).
- `sqlite_components` / `sqlite_client` / `sqlite_api` (module): the same over one SQLite
  database shared by the tests of a module, for the long error and authorisation matrices.
- `make_api` (function): `await make_api(db_url, things_url=..., things_timeout=...)` is an
  `Api` over an app of its own, closed after the test.
"""

import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from litestar import Litestar

from authority.settings import load_settings
from authority.wiring import Components, build
from hsm.authority import CertificateAuthority
from repository import migrate
from server.http.app import create_app
from tests.fixtures.hsm import PIN, SO_PIN

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
SERIAL_HEX = re.compile(r"^[0-9a-f]+$")
ISSUE_FIELDS = {"serial", "thing_id", "certificate", "issuing_ca", "ca_chain", "private_key",
                "private_key_type", "key_bits", "expires_at"}
VIEW_FIELDS = {"serial", "thing_id", "certificate", "issuing_ca", "ca_chain",
               "private_key_type", "key_type", "key_bits", "expires_at", "downloaded"}
# (method, path pattern, success status) of the responses that carry a private key.
_KEY_ROUTES = (
    ("POST", re.compile(r"^/certs/?$"), 201),
    ("PUT", re.compile(r"^/certs/[^/]+$"), 201),
    ("POST", re.compile(r"^/certs/[^/]+/rotate$"), 201),
    ("GET", re.compile(r"^/certs/[^/]+/download$"), 200),
)


def _build_components(db_url: str, authority: CertificateAuthority, identity: Any,
                      workdir: Path, things_timeout: str = "5s",
                      things_url: str | None = None) -> Components:
    """The service's components over ``db_url``.

    The identity calls get a 5 s deadline instead of the default 1 s: on a loaded two-core CI
    machine the first call on a fresh channel has been seen to take longer than 1 s. The
    unavailability tests pass ``things_timeout="1s"`` to run with the default.
    ``things_url`` points the things client elsewhere (default: the test provider).
    """
    migrate(db_url)
    settings = replace(load_settings({
        "MF_CERTS_DB_URL": db_url,
        "MF_THINGS_GRPC_URL": things_url or identity.things_url,
        "MF_AUTH_GRPC_URL": identity.auth_url,
        "MF_THINGS_GRPC_TIMEOUT": things_timeout,
        "MF_AUTH_GRPC_TIMEOUT": things_timeout,
        "MF_CERTS_CRL_PATH": str(workdir / "crl.pem"),
        "MF_CERTS_SIGN_CA_PATH": str(workdir / "unused"),
    }), hsm_pool_size=4)
    return build(settings, authority)


@pytest.fixture
async def components(
    db_url: str, authority: CertificateAuthority, identity, tmp_path: Path,
) -> AsyncIterator[Components]:
    built = _build_components(db_url, authority, identity, tmp_path)
    yield built
    await built.things.close()
    built.service.close()


@asynccontextmanager
async def serving(app: Litestar, *, lifespan: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` running in this event loop, so that requests made together really run
    together (Litestar's AsyncTestClient hands each request to a thread of its own and waits for
    it: one at a time). The fixtures build and close the components themselves; `lifespan`
    also runs the app's startup and shutdown hooks (enter and leave in the same task)."""
    transport = httpx.ASGITransport(app=app)
    async with AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app.lifespan())
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver.local"))


@pytest.fixture
async def client(components: Components) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(components=components)
    async with serving(app) as test_client:
        yield test_client


@pytest.fixture
def bearer(identity) -> Callable[[str], dict[str, str]]:
    def headers(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {identity.users[user].token}"}
    return headers


# ---- checked clients ---------------------------------------------------------------------


def _may_carry_key(response: httpx.Response) -> bool:
    method, path = response.request.method, response.request.url.path
    return any(method == m and pattern.match(path) and response.status_code == status
               for m, pattern, status in _KEY_ROUTES)


def _leak_guard(identity: Any) -> Callable[[httpx.Response], Any]:
    secrets = [PIN, SO_PIN, *(user.token for user in identity.users.values()),
               *(thing.key for thing in identity.things.values())]

    async def check(response: httpx.Response) -> None:
        await response.aread()
        text = response.content.decode("utf-8", errors="replace")
        where = f"{response.request.method} {response.request.url.path}"
        assert "Traceback" not in text, where
        assert 'File "' not in text, where
        for secret in secrets:
            assert secret not in text, f"{where} echoed a secret"
        if not _may_carry_key(response):
            assert "PRIVATE KEY" not in text, f"{where} returned a private key"
        if response.status_code >= 400 and response.request.url.path != "/health":
            body = response.json()
            assert set(body) == {"error"} and isinstance(body["error"], str), where
            assert body["error"], where

    return check


class Api:
    """Requests as the test users make them, and checks with independent implementations."""

    def __init__(self, client: httpx.AsyncClient, components: Components, identity: Any,
                 workdir: Path) -> None:
        self.client = client
        self.components = components
        self.identity = identity
        self.workdir = workdir
        self.ca_pem: str = components.authority.ca_pem
        self.ca = x509.load_pem_x509_certificate(self.ca_pem.encode())
        self._files = 0

    # requests

    def auth(self, user: str | None) -> dict[str, str]:
        if user is None:
            return {}
        if user == "rejected":
            return {"Authorization": f"Bearer {self.identity.unknown_token}"}
        return {"Authorization": f"Bearer {self.identity.users[user].token}"}

    def thing_id(self, thing: str) -> str:
        return str(self.identity.things[thing].id)

    async def issue(self, user: str = "alice", thing: str = "thing-a1", expect: int = 201,
                    **fields: Any) -> dict[str, Any]:
        """POST /certs; EC unless key_type is given (key_type=None leaves it out)."""
        body = {"thing_id": self.thing_id(thing), "key_type": "ec", **fields}
        body = {name: value for name, value in body.items() if value is not None}
        response = await self.client.post("/certs", json=body, headers=self.auth(user))
        assert response.status_code == expect, response.text
        result: dict[str, Any] = response.json()
        return result

    async def view(self, serial: str, user: str = "alice") -> httpx.Response:
        return await self.client.get(f"/certs/{serial}", headers=self.auth(user))

    async def download(self, serial: str, key: str, scheme: str = "Thing") -> httpx.Response:
        return await self.client.get(f"/certs/{serial}/download",
                                     headers={"Authorization": f"{scheme} {key}"})

    async def crl(self) -> x509.CertificateRevocationList:
        """GET /crl, checked: DER, application/pkix-crl, signed by the CA."""
        response = await self.client.get("/crl")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].split(";")[0] == "application/pkix-crl"
        crl = x509.load_der_x509_crl(response.content)
        assert crl.is_signature_valid(self.ca.public_key())
        assert crl.issuer == self.ca.subject
        return crl

    async def crl_serials(self) -> set[str]:
        return {format(entry.serial_number, "x") for entry in await self.crl()}

    # independent checks

    def write(self, name: str, data: str | bytes) -> Path:
        self._files += 1
        path = self.workdir / f"{self._files}-{name}"
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def openssl(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                              timeout=30, check=False)

    def openssl_verify(self, certificate_pem: str, crl_pem: str | None = None
                       ) -> subprocess.CompletedProcess[str]:
        """`openssl verify -CAfile ca.pem -purpose sslclient` (with -crl_check given a CRL)."""
        args: list[str | Path] = ["verify", "-CAfile", self.write("ca.pem", self.ca_pem),
                                  "-purpose", "sslclient"]
        if crl_pem is not None:
            args += ["-crl_check", "-CRLfile", self.write("crl.pem", crl_pem)]
        return self.openssl(*args, self.write("cert.pem", certificate_pem))

    def check_issued(self, body: dict[str, Any], thing_id: str, key_type: str,
                     key_bits: int) -> x509.Certificate:
        """Every field of an issue body, the certificate checked by openssl and cryptography."""
        assert set(body) == ISSUE_FIELDS, sorted(body)
        assert body["thing_id"] == thing_id
        serial = body["serial"]
        assert SERIAL_HEX.match(serial), serial
        assert len(serial) <= 40
        cert = x509.load_pem_x509_certificate(body["certificate"].encode())
        assert cert.serial_number == int(serial, 16)
        assert format(cert.serial_number, "x") == serial
        assert 0 < cert.serial_number < 2**159
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert [attribute.value for attribute in cn] == [thing_id]
        cert.verify_directly_issued_by(self.ca)
        verified = self.openssl_verify(body["certificate"])
        assert verified.returncode == 0 and "OK" in verified.stdout, verified.stderr
        assert body["issuing_ca"].strip() == self.ca_pem.strip()
        assert isinstance(body["ca_chain"], list) and body["ca_chain"]
        assert body["ca_chain"][0].strip() == self.ca_pem.strip()
        for link in body["ca_chain"]:
            x509.load_pem_x509_certificate(link.encode())
        assert body["private_key_type"] == key_type
        assert body["key_bits"] == key_bits
        header = "-----BEGIN EC PRIVATE KEY-----" if key_type == "ec" else \
            "-----BEGIN RSA PRIVATE KEY-----"
        assert body["private_key"].startswith(header), body["private_key"][:40]
        key = load_pem_private_key(body["private_key"].encode(), password=None)
        assert spki(key.public_key()) == spki(cert.public_key())
        assert key.key_size == key_bits  # type: ignore[union-attr]
        assert RFC3339_Z.match(body["expires_at"]), body["expires_at"]
        assert parse_time(body["expires_at"]) == cert.not_valid_after_utc
        return cert


def spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@pytest.fixture
def api(client: httpx.AsyncClient, components: Components, identity, tmp_path: Path) -> Api:
    client.event_hooks = {"request": [], "response": [_leak_guard(identity)]}
    return Api(client, components, identity, tmp_path)


@pytest.fixture(scope="module")
async def sqlite_components(
    authority: CertificateAuthority, identity, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Components]:
    workdir = tmp_path_factory.mktemp("http-sqlite")
    built = _build_components(f"sqlite:///{workdir / 'certs.db'}", authority, identity, workdir)
    yield built
    await built.things.close()
    built.service.close()


@pytest.fixture(scope="module")
async def sqlite_client(sqlite_components: Components, identity
                        ) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(components=sqlite_components)
    async with serving(app) as test_client:
        test_client.event_hooks = {"request": [], "response": [_leak_guard(identity)]}
        yield test_client


@pytest.fixture
def sqlite_api(sqlite_client: httpx.AsyncClient, sqlite_components: Components, identity,
               tmp_path: Path) -> Api:
    return Api(sqlite_client, sqlite_components, identity, tmp_path)


@pytest.fixture
async def make_api(authority: CertificateAuthority, identity, tmp_path: Path
                   ) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    async with AsyncExitStack() as stack:
        made = 0

        async def make(db_url: str, *, things_url: str | None = None,
                       things_timeout: str = "5s") -> Api:
            nonlocal made
            made += 1
            workdir = tmp_path / f"app-{made}"
            workdir.mkdir()
            built = _build_components(db_url, authority, identity, workdir, things_timeout,
                                      things_url)
            stack.callback(built.service.close)
            stack.push_async_callback(built.things.close)
            client = await stack.enter_async_context(serving(create_app(components=built)))
            client.event_hooks = {"request": [], "response": [_leak_guard(identity)]}
            return Api(client, built, identity, workdir)

        yield make
