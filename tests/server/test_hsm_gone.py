"""The token disappears under a running ``certs serve``: issuing answers 503 ``signing service
unavailable`` (never 500, never a hang), also for requests issued together in one batch, and
/health says the HSM failed."""

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import serve_env, start_serve, stop_serve

UNAVAILABLE = (503, {"error": "signing service unavailable"})


def test_a_token_gone_under_the_service_gives_503(tmp_path: Path,
                                                  identity: IdentityFixture) -> None:
    env = serve_env(tmp_path, identity, workers=1, extra={"MF_CERTS_HSM_TIMEOUT": "1s"})
    served = start_serve(env, tmp_path)
    try:
        base = f"http://127.0.0.1:{served.port}"
        headers = {"Authorization": f"Bearer {identity.alice.token}"}
        body = {"thing_id": identity.thing_a1.id, "key_type": "ec"}
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.post("/certs", json=body, headers=headers).status_code == 201

            shutil.rmtree(served.state / "tokens")

            def issue(_: int) -> httpx.Response:
                with httpx.Client(base_url=base, timeout=60) as own:
                    return own.post("/certs", json=body, headers=headers)

            with ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(issue, range(8)))
            assert [(r.status_code, r.json()) for r in responses] == [UNAVAILABLE] * 8

            health = client.get("/health")
            assert health.status_code == 503, health.text
            assert health.json()["checks"]["hsm"]["status"] == "fail"
            assert health.json()["checks"]["database"]["status"] == "pass"
        log = served.output()
        assert "Traceback" not in log
        assert env["MF_CERTS_HSM_PIN"] not in log
    finally:
        stop_serve(served.process)
