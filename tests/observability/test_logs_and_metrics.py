"""Logs and metrics of a real ``certs serve`` with two workers (SPEC 11)."""

import time

import httpx

from authority import errors as msg
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import serve_env, start_serve, stop_serve
from tests.observability.helpers import json_lines, request_lines, scrape, total

METRICS = (
    "certs_api_request_count", "certs_api_request_latency_microseconds_count",
    "certs_api_responses_total", "certs_api_request_seconds_bucket",
    "certs_issued_total", "certs_revoked_total", "certs_crl_entries", "certs_crl_number",
    "certs_crl_age_seconds", "certs_hsm_sign_seconds_bucket", "certs_hsm_sessions",
    "certs_hsm_sessions_in_use", "certs_hsm_errors_total", "certs_identity_request_seconds_count",
    "certs_identity_errors_total", "certs_outbox_backlog", "certs_ca_expiry_seconds",
    "certs_expiring_certificates",
)


def test_metrics_count_every_path_and_logs_are_json_without_secrets(
        tmp_path, identity: IdentityFixture) -> None:
    env = serve_env(tmp_path, identity, workers=2, extra={"MF_CERTS_LOG_LEVEL": "info"})
    served = start_serve(env, tmp_path)
    alice = {"Authorization": f"Bearer {identity.alice.token}"}
    thing = identity.thing_a1
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
            serials = []
            for number in range(3):
                issued = client.post("/certs", headers={**alice, "X-Request-Id": f"issue-{number}"},
                                     json={"thing_id": thing.id, "key_type": "ec", "ttl": "2h"})
                assert issued.status_code == 201, issued.text
                assert issued.headers["x-request-id"] == f"issue-{number}"
                serials.append(issued.json()["serial"])
            renewed = client.put(f"/certs/{serials[0]}", headers=alice)
            assert renewed.status_code == 201, renewed.text
            revoked = client.delete(f"/certs/{serials[1]}", headers=alice)
            assert revoked.status_code == 200, revoked.text
            again = client.delete(f"/certs/{serials[1]}", headers=alice)
            assert again.status_code == 404
            generated = again.headers["x-request-id"]
            assert len(generated) >= 16
            rejected = client.get(f"/certs/{serials[2]}",
                                  headers={"Authorization": f"Bearer {identity.unknown_token}"})
            assert rejected.status_code == 401
            downloaded = client.get(f"/certs/{serials[2]}/download",
                                    headers={"Authorization": f"Thing {thing.key}"})
            assert downloaded.status_code == 200, downloaded.text

            samples = scrape(client)
            deadline = time.monotonic() + 30
            while "certs_outbox_backlog" not in samples and time.monotonic() < deadline:
                time.sleep(0.5)  # the scheduler reads the outbox size shortly after its start
                samples = scrape(client)
    finally:
        stop_serve(served.process)

    for name in METRICS:
        assert name in samples, f"{name} missing from /metrics"
    assert total(samples, "certs_issued_total") == 4
    assert total(samples, "certs_issued_total", path="issue") == 3
    assert total(samples, "certs_issued_total", path="renew") == 1
    assert total(samples, "certs_revoked_total") == 2
    assert total(samples, "certs_revoked_total", reason="superseded") == 1
    assert total(samples, "certs_crl_entries") == 2
    # both workers answered some of these requests: the figures are summed over processes
    assert total(samples, "certs_api_request_count", method="issue_cert") == 3
    assert total(samples, "certs_api_responses_total", method="issue_cert", status="201") == 3
    assert total(samples, "certs_api_responses_total", method="revoke_cert", status="404") == 1
    assert total(samples, "certs_api_responses_total", method="view_cert", status="401") == 1
    assert total(samples, "certs_hsm_sign_seconds_count") >= 4
    assert total(samples, "certs_hsm_sessions") > 0
    assert total(samples, "certs_identity_request_seconds_count", service="things",
                 method="CanUserAccessThing") >= 5
    assert total(samples, "certs_identity_request_seconds_count", service="auth",
                 method="Identify") >= 1
    assert total(samples, "certs_identity_errors_total", service="things",
                 code="UNAUTHENTICATED") == 1
    assert 3600 * 24 * 3000 < total(samples, "certs_ca_expiry_seconds") < 3600 * 24 * 3651
    # active now: the third certificate and the renewal, both expiring in 2 h
    assert total(samples, "certs_expiring_certificates", within="1d") == 2
    assert total(samples, "certs_expiring_certificates", within="renew_window") == 2
    assert total(samples, "certs_crl_age_seconds") >= 0

    log = served.output()
    for secret in (env["MF_CERTS_HSM_PIN"], *(user.token for user in identity.users.values()),
                   *(t.key for t in identity.things.values()), identity.unknown_token,
                   "PRIVATE KEY"):
        assert secret not in log
    lines = json_lines(log)
    requests = request_lines(lines)
    by_id = {line["request_id"]: line for line in requests}
    first = by_id["issue-0"]
    assert first["method"] == "POST" and first["route"] == "/certs" and first["status"] == 201
    assert first["actor"] == f"user:{identity.alice.id}"
    assert first["thing_id"] == thing.id and first["serials"] == [serials[0]]
    assert first["ms"] >= 0 and first["client"] == "127.0.0.1"
    renew = next(line for line in requests if line["method"] == "PUT")
    assert renew["route"] == "/certs/{serial}" and renew["status"] == 201
    assert renew["serials"][0] == serials[0] and len(renew["serials"]) == 2
    missing = by_id[generated]
    assert missing["status"] == 404 and missing["reason"] == msg.REVOKE_NOT_FOUND
    unauthenticated = next(line for line in requests if line["status"] == 401)
    assert unauthenticated["reason"] == msg.AUTHENTICATION_FAILED
    assert unauthenticated["route"] == "/certs/{serial}"
    download = next(line for line in requests if line["route"].endswith("/download"))
    assert download["actor"] == f"thing:{thing.id}" and download["serials"] == [serials[2]]
    assert {line["logger"] for line in lines} >= {"certs.http"}
    assert len(requests) == len({line["request_id"] for line in requests})
