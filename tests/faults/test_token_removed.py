"""The SoftHSM2 token folder moved away under a loaded ``certs serve`` (two HTTP workers and the
scheduler, SQLite), then put back: the service recovers with nobody restarting it.

While the token is away, SoftHSM2's module can never be used again by the processes that had
it loaded (hsm/faults.py, ``LIBRARY``): each worker reports itself unfit and the pool replaces
it by a degraded one (reads served, signing 503 at once) that probes the HSM in a child process
and is replaced by a signing worker once the token is back. The test checks, from the outside:
every issuance during the outage is a quick 503 ``signing service unavailable`` (never a 500,
never a wait for MF_CERTS_HSM_TIMEOUT); views, lists and ``/health`` answer throughout and
/health names the HSM; no call ever finds the port without a listener; issuance succeeds again
soon after the token is back, every worker having been replaced; the certificates issued
afterwards verify against the CA with openssl and with cryptography.

Figures (recovery time, latencies) are printed as one ``FAULT FIGURES`` JSON line (run with
``-s`` to see them).
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.faults.traffic import Call, Traffic, between, latency
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve

HSM_TIMEOUT_SECONDS = 5.0
UNAVAILABLE = "signing service unavailable"
# Removal is noticed by the next signature; calls that started this soon after may still have
# been inside the HSM when the token went.
SETTLE_SECONDS = 1.0
# How long the test waits for issuance to come back before it gives up (the figure is reported;
# the service's aim is a few seconds).
RECOVERY_LIMIT_SECONDS = 30.0


def _children(pid: int) -> list[int]:
    """The children of every thread of `pid` (the scheduler is started by a thread)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _processes(served: Served, marker: str) -> set[int]:
    found = set()
    for pid in _children(served.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.add(pid)
    return found


def _wait_healthy(client: httpx.Client, timeout: float) -> httpx.Response:
    """/health until it is 200 twice in a row (two workers), or the last answer."""
    deadline = time.monotonic() + timeout
    passes = 0
    response = client.get("/health")
    while time.monotonic() < deadline:
        response = client.get("/health")
        passes = passes + 1 if response.status_code == 200 else 0
        if passes >= 4:
            break
        time.sleep(0.25)
    return response


def _verify_with_openssl_and_cryptography(pem: str, ca_path: Path, workdir: Path) -> None:
    leaf = workdir / "after-recovery.pem"
    leaf.write_text(pem)
    checked = subprocess.run(["openssl", "verify", "-CAfile", str(ca_path), str(leaf)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    certificate = x509.load_pem_x509_certificate(pem.encode())
    certificate.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_path.read_bytes()))


def _problems(calls: list[Call], removed: float, restored: float) -> list[str]:
    problems = []
    unanswered = [call for call in calls if call.status == 0]
    if unanswered:
        problems.append(f"{len(unanswered)} calls found no listener or no answer: "
                        f"{sorted({call.error for call in unanswered})}")
    errors = [call for call in calls if call.status >= 500 and call.status != 503]
    if errors:
        problems.append(f"server errors: {[(c.kind, c.status, c.error) for c in errors]}")
    outage = between(calls, removed + SETTLE_SECONDS, restored, "issue")
    if not outage:
        problems.append("no issuance was attempted during the outage")
    wrong = [(c.status, c.error) for c in outage if (c.status, c.error) != (503, UNAVAILABLE)]
    if wrong:
        problems.append(f"issuance during the outage answered {sorted(set(wrong))}")
    slow = [c.seconds for c in outage if c.seconds >= HSM_TIMEOUT_SECONDS]
    if slow:
        problems.append(f"{len(slow)} 503s waited out MF_CERTS_HSM_TIMEOUT: {max(slow):.1f} s")
    for kind in ("view", "list"):
        reads = between(calls, removed, restored, kind)
        bad = [(c.status, c.error) for c in reads if c.status != 200]
        if not reads or bad:
            problems.append(f"{kind} during the outage: {len(reads)} calls, failures {bad}")
    health = between(calls, removed + SETTLE_SECONDS + 1.0, restored, "health")
    passing = [c for c in health if c.status != 503]
    if not health or passing:
        problems.append(f"/health during the outage: {len(health)} calls, "
                        f"{len(passing)} not 503")
    for call in health:
        check = call.body.get("checks", {})
        hsm = check.get("hsm", {}) if isinstance(check, dict) else {}
        if hsm.get("status") != "fail" or "HSM" not in str(hsm.get("output", "")):
            problems.append(f"/health during the outage does not name the HSM: {call.body}")
            break
    return problems


@pytest.mark.parametrize("outage_seconds", [5.0, 60.0], ids=["5s", "60s"])
def test_token_folder_removed_and_restored_under_load(
        tmp_path: Path, identity: IdentityFixture, outage_seconds: float) -> None:
    env = serve_env(tmp_path, identity, workers=2,
                    extra={"MF_CERTS_HSM_TIMEOUT": f"{HSM_TIMEOUT_SECONDS:.0f}s"})
    served = start_serve(env, tmp_path)
    try:
        base = f"http://127.0.0.1:{served.port}"
        headers = {"Authorization": f"Bearer {identity.alice.token}"}
        body = {"thing_id": identity.thing_a1.id, "key_type": "ec"}
        with httpx.Client(base_url=base, timeout=30) as client:
            first = client.post("/certs", json=body, headers=headers)
            assert first.status_code == 201, first.text
            # Certificates the outage's DELETE, PUT and rotate act on (1h: renewable now).
            kept = {route: client.post("/certs", json={**body, "ttl": "1h"}, headers=headers)
                    .json()["serial"] for route in ("delete", "renew", "rotate")}
            assert _wait_healthy(client, 30).status_code == 200
        workers_before = _processes(served, "server.workers")
        scheduler_before = _processes(served, "-m scheduler")
        assert len(workers_before) == 2 and len(scheduler_before) == 1

        traffic = Traffic(base, identity.alice.token, identity.thing_a1.id,
                          first.json()["serial"])
        traffic.start()
        time.sleep(2.0)
        tokens = served.state / "tokens"
        removed = time.monotonic()
        shutil.move(tokens, served.state / "tokens-away")
        time.sleep(SETTLE_SECONDS)
        with httpx.Client(base_url=base, timeout=30, headers=headers) as client:
            changes = {
                "delete": client.delete(f"/certs/{kept['delete']}"),
                "renew": client.put(f"/certs/{kept['renew']}"),
                "rotate": client.post(f"/certs/{kept['rotate']}/rotate", json=body),
            }
        time.sleep(max(0.0, outage_seconds - SETTLE_SECONDS))
        shutil.move(served.state / "tokens-away", tokens)
        restored = time.monotonic()
        deadline = restored + RECOVERY_LIMIT_SECONDS
        while time.monotonic() < deadline:
            if any(c.status == 201 for c in between(traffic.calls, restored, deadline, "issue")):
                break
            time.sleep(0.2)
        time.sleep(8.0)  # every worker replaced; the calls after this all sign
        calls = traffic.stop()

        issued_after = [c for c in between(calls, restored, float("inf"), "issue")
                        if c.status == 201]
        recovery = issued_after[0].ended - restored if issued_after else None
        outage = between(calls, removed + SETTLE_SECONDS, restored)
        figures = {
            "outage_s": outage_seconds,
            "first_issue_after_restore_s": None if recovery is None else round(recovery, 2),
            "issue_503": latency([c for c in outage if c.kind == "issue"]),
            "view": latency([c for c in outage if c.kind == "view"]),
            "list": latency([c for c in outage if c.kind == "list"]),
            "health": latency([c for c in outage if c.kind == "health"]),
            "crl": latency([c for c in outage if c.kind == "crl"]),
            "crl_statuses": sorted({c.status for c in outage if c.kind == "crl"}),
            "calls": len(calls),
        }
        print("FAULT FIGURES " + json.dumps(figures))

        problems = _problems(calls, removed, restored)
        if recovery is None:
            problems.append(f"no issuance succeeded within {RECOVERY_LIMIT_SECONDS} s "
                            "of the restore")
        tail = [c for c in calls if c.kind == "issue"][-6:]
        if any(c.status != 201 for c in tail):
            problems.append(f"the last issuances did not all sign: "
                            f"{[(c.status, c.error) for c in tail]}")
        assert not problems, "\n".join(problems) + f"\nfigures: {figures}"

        # A 503 means nothing changed: each of them is still active and not in the CRL.
        assert {route: (r.status_code, r.json()) for route, r in changes.items()} == {
            route: (503, {"error": UNAVAILABLE}) for route in changes}
        with httpx.Client(base_url=base, timeout=30) as client:
            health = _wait_healthy(client, 30)
            assert health.status_code == 200, health.text
            assert health.json()["checks"]["hsm"]["status"] == "pass"
            for serial in kept.values():
                view = client.get(f"/certs/{serial}", headers=headers)
                assert view.status_code == 200, view.text
            crl = x509.load_der_x509_crl(client.get("/crl").content)
            listed = {entry.serial_number for entry in crl}
            assert not listed & {int(serial, 16) for serial in kept.values()}
        _verify_with_openssl_and_cryptography(str(issued_after[-1].body["certificate"]),
                                              served.signing_ca, tmp_path)
        assert served.process.poll() is None  # the same certs serve all along
        workers_after = _processes(served, "server.workers")
        assert len(workers_after) == 2
        assert not workers_after & workers_before, "every unfit worker was replaced"
        log = served.output()
        assert "connection.unrecoverable" in log
        assert "Traceback" not in log
        assert env["MF_CERTS_HSM_PIN"] not in log
    finally:
        stop_serve(served.process)
