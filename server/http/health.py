"""``GET /health``: whether the next request could be served (SPEC section 11).

Each dependency gets a check: ``pass``, ``warn`` (degraded: the next request is still served) or
``fail`` (it would not be): the HSM, the database, the things and auth services, and the CRL file.
Any ``fail`` makes the answer 503.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from litestar import Response
from litestar.datastructures import State

from authority.crl_publisher import CrlPublisher, crl_file_problem
from authority.identity import AuthClient, IdentityError, IdentityUnavailable, ThingsClient
from authority.settings import Settings
from authority.wiring import Components
from hsm.authority import Health
from server.http.operations import HEALTH
from server.http.routes import get_or_head

VERSION = "0.1.0"
# Its own threads: a health check must answer while the service's threads are all busy.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="certs-health")
# The HSM check signs once, waits at most this long, and its verdict is kept a second.
HSM_CHECK_SECONDS = 0.5
HSM_VERDICT_SECONDS = 1.0
# A probe value no thing key or user token has: the identity service answers "not found".
_PROBE = "certs-health-probe"


async def _database(components: Components) -> dict[str, Any]:
    try:
        await asyncio.get_running_loop().run_in_executor(_checks, components.store.ping)
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure
        return {"status": "fail", "output": f"database unavailable: {type(exc).__name__}"}
    return {"status": "pass"}


class HsmVerdict:
    """The HSM check of one app: at most one signature in flight, its verdict kept
    HSM_VERDICT_SECONDS, and no caller waits more than HSM_CHECK_SECONDS for it (a hung HSM
    holds one of the health threads, never more)."""

    def __init__(self) -> None:
        self._verdict: dict[str, Any] | None = None
        self._at = float("-inf")
        self._running: asyncio.Future[Health] | None = None

    async def check(self, components: Components) -> dict[str, Any]:
        if self._verdict is not None and time.monotonic() - self._at < HSM_VERDICT_SECONDS:
            return self._verdict
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().run_in_executor(
                _checks, components.authority.health, HSM_CHECK_SECONDS)
        try:
            health = await asyncio.wait_for(asyncio.shield(self._running),
                                            HSM_CHECK_SECONDS + 0.1)
            verdict = {"status": "pass" if health.ok else "fail", "output": health.detail}
        except TimeoutError:
            verdict = {"status": "fail",
                       "output": f"HSM unusable: no signature within {HSM_CHECK_SECONDS} s"}
        if components.authority.connection.unrecoverable is not None:
            verdict["output"] += "; this process is being replaced by a new one"
        self._verdict, self._at = verdict, time.monotonic()
        return verdict


async def _hsm(state: State, components: Components) -> dict[str, Any]:
    verdict: HsmVerdict | None = state.get("health_hsm")
    if verdict is None:
        verdict = HsmVerdict()
        state["health_hsm"] = verdict
    return await verdict.check(components)


async def _identity(client: ThingsClient | AuthClient) -> dict[str, Any]:
    """fail: unreachable, or it answers that it is unavailable; warn: it answers, but in more
    than half of its MF_*_GRPC_TIMEOUT; pass otherwise."""
    name = client.service
    if not await client.ready(timeout=min(client.timeout, 1.0)):
        return {"status": "fail", "output": f"{name} service unreachable at {client.target}"}
    started = time.monotonic()
    try:
        if isinstance(client, ThingsClient):
            await client.identify_thing(_PROBE)
        else:
            await client.identify_user(_PROBE)
    except IdentityUnavailable:
        return {"status": "fail", "output": f"{name} service unavailable at {client.target}"}
    except IdentityError:
        pass  # it answered: the probe is nobody's key
    took = time.monotonic() - started
    if took > client.timeout / 2:
        return {"status": "warn",
                "output": f"{name} service answers slowly ({took:.2f} s of {client.timeout} s)"}
    return {"status": "pass"}


def _crl_file(publisher: CrlPublisher, path: str) -> dict[str, Any]:
    problem = crl_file_problem(Path(path))
    if problem is None and publisher.write_error is not None:
        publisher.publish()  # the path is writable again: bring the file up to date now
        problem = publisher.write_error
    if problem is not None:
        return {"status": "fail",
                "output": f"the CRL file {path} (MF_CERTS_CRL_PATH) cannot be written: "
                          f"{problem}; the CRL is still served over HTTP"}
    return {"status": "pass"}


async def _crl(components: Components) -> dict[str, Any]:
    service = components.service
    try:
        return await asyncio.get_running_loop().run_in_executor(
            _checks, _crl_file, service.crl, service.settings.crl_path)
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure
        return {"status": "fail", "output": f"the CRL cannot be published: {type(exc).__name__}"}


def _auth_client(state: State, settings: Settings) -> AuthClient:
    """The auth service's client of this app, opened by the first health check."""
    client: AuthClient | None = state.get("health_auth")
    if client is None:
        client = AuthClient(settings.auth_url, timeout=settings.auth_timeout,
                            tls=settings.client_tls, ca_certs=settings.ca_certs or None)
        state["health_auth"] = client
    return client


@get_or_head("/health", **HEALTH)
async def health(state: State) -> Response[dict[str, Any]]:
    components: Components = state.components
    auth = _auth_client(state, components.service.settings)
    results = await asyncio.gather(_hsm(state, components), _database(components),
                                   _identity(components.things), _identity(auth),
                                   _crl(components))
    checks = dict(zip(("hsm", "database", "things", "auth", "crl"), results, strict=True))
    statuses = {check["status"] for check in checks.values()}
    ok = "fail" not in statuses
    status = "fail" if not ok else "warn" if "warn" in statuses else "pass"
    body = {"status": status, "version": VERSION, "commit": state.commit,
            "description": "certs service", "build_time": state.build_time, "checks": checks}
    return Response(body, status_code=200 if ok else 503, media_type="application/health+json")
