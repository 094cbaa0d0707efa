"""``GET /health``: whether the next request could be served (SPEC section 11)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from authority.wiring import Components
from hsm.authority import Health
from server.http.operations import HEALTH

VERSION = "0.1.0"
# Its own threads: a health check must answer while the service's threads are all busy.
_checks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="certs-health")


async def _database(components: Components) -> dict[str, Any]:
    try:
        await asyncio.get_running_loop().run_in_executor(_checks, components.store.ping)
    except Exception as exc:  # noqa: BLE001 - a health check reports every failure
        return {"status": "fail", "output": f"database unavailable: {type(exc).__name__}"}
    return {"status": "pass"}


async def _hsm(components: Components) -> dict[str, Any]:
    health: Health = await asyncio.get_running_loop().run_in_executor(
        _checks, components.authority.health)
    return {"status": "pass" if health.ok else "fail", "output": health.detail}


@get("/health", **HEALTH)
async def health(state: State) -> Response[dict[str, Any]]:
    components: Components = state.components
    hsm_check, database_check = await asyncio.gather(_hsm(components), _database(components))
    checks: dict[str, Any] = {"hsm": hsm_check, "database": database_check}
    ok = all(check["status"] == "pass" for check in checks.values())
    # The things service is reported, but only the HSM and the database make the service unusable.
    things_ready = await components.things.ready(timeout=0.5)
    checks["things"] = {"status": "pass" if things_ready else "warn"}
    body = {"status": "pass" if ok else "fail", "version": VERSION, "commit": state.commit,
            "description": "certs service", "build_time": state.build_time, "checks": checks}
    return Response(body, status_code=200 if ok else 503, media_type="application/health+json")
