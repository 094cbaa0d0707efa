"""Many threads signing through one connection, in a child process that may crash alone.

FINDINGS 1: with python-pkcs11's plain ``C_Initialize(NULL)`` SoftHSM2 runs without locking
while python-pkcs11 releases the GIL, and two threads signing in their own sessions crashed
the process (segfault, three runs of three). ``hsm.library`` re-initialises the module with
``CKF_OS_LOCKING_OK``. Here 8 threads share one ``HsmConnection`` with a pool of 4 sessions
(wait_seconds 5, the default) for 5 seconds; the child must exit normally and every signature
it made must verify. (The crashing control is not a test: a crash is likely but not certain on
any one run.)
"""

import pytest
from cryptography.exceptions import InvalidSignature

from tests.hsm.helpers import (
    ScenarioRun,
    ca_public_key,
    message_for,
    run_scenario,
    type_id,
    unpack_signatures,
    verify_signature,
)

THREADS = 8
POOL = 4
SECONDS = 5


@pytest.fixture(scope="module", params=[("ec", 256), ("rsa", 2048)], ids=type_id)
def stress(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> ScenarioRun:
    # SoftHSM2 only for now (no hsm_backend): on tpm2-pkcs11 1.9 behind tpm2-abrmd the RSA-2048
    # run crashed the child (SIGSEGV, inside the module) in 1 of 3 runs, and the pool's
    # fairness bound does not hold there (one TPM, a module lock that is not FIFO: calls of
    # 3.3 s, threads starved for 5 s). Open: find out whether that is the module's doing.
    hsm_backend = "softhsm"
    key_type, size = request.param
    return run_scenario("stress", tmp_path_factory.mktemp(f"stress-{key_type}{size}"),
                        key_type, str(size), str(THREADS), str(POOL), str(SECONDS),
                        timeout=SECONDS + 60, backend=hsm_backend)


def test_eight_threads_sign_through_one_connection(stress: ScenarioRun) -> None:
    assert stress.returncode == 0, stress.describe()  # -11 would be the segfault
    result = stress.result
    # Crashes of the kind FINDINGS describes surface as GeneralError & co. before a segfault;
    # HsmUnavailable (a waiter starved by the pool) is the fairness test's business.
    others = {k: v for k, v in result["errors"].items() if k != "HsmUnavailable"}
    assert others == {}, result["errors"]
    assert result["stuck_threads"] == []
    assert result["ok"] > 0

    records = unpack_signatures((stress.out_dir / "signatures.bin").read_bytes())
    assert len(records) == result["ok"]
    assert len({(thread, sequence) for thread, sequence, _ in records}) == len(records)
    public_key = ca_public_key((stress.out_dir / "ca.pem").read_text())
    bad = []
    for thread, sequence, signature in records:
        try:
            verify_signature(public_key, signature, message_for(thread, sequence))
        except InvalidSignature:
            bad.append((thread, sequence))
    assert bad == [], f"{len(bad)} of {len(records)} signatures do not verify: {bad[:10]}"


def test_pool_serves_waiting_threads_fairly(stress: ScenarioRun) -> None:
    """With 8 threads on 4 sessions, no signature waits for seconds while others get thousands.

    A signature takes well under 10 ms here; a waiter passed over for a second or more is
    starved (at the default wait_seconds=5 it ends in HsmUnavailable on a healthy HSM). The
    same run with a first-come-first-served hand-off of sessions measured a slowest call of
    0.06 s and equal counts per thread on this machine.
    """
    assert stress.returncode == 0, stress.describe()
    result = stress.result
    counts = result["per_thread"]
    assert result["errors"] == {}, f"on a healthy HSM: {result['errors']}; per thread {counts}"
    # Every thread got sessions: nobody starved behind the pool for the whole run.
    assert sorted(counts) == [str(i) for i in range(THREADS)], result
    assert result["max_call_seconds"] < 1.0, (
        f"slowest call {result['max_call_seconds']:.2f} s (p99 "
        f"{result['p99_call_seconds']:.3f} s); calls per thread {counts}; "
        f"errors {result['errors']}"
    )
