"""Faults under running signers (SPEC section 6), each in a child process with its own token.

- Sessions closed (``C_CloseAllSessions``) and the process logged out (``C_Logout`` on the
  anchor session) while 4 threads sign: the connection repairs itself in-process. Every call
  returns a valid signature or raises HsmUnavailable, most succeed, and signing works again
  once the disturbance stops.
- The token deleted for good (its directory removed; then also its sessions dropped): every
  call raises HsmUnavailable within wait_seconds + 1 s, nothing hangs or crashes, and
  ``health()`` reports the HSM as unusable.

Observed with SoftHSM 2.6.1: calling ``C_CloseAllSessions`` while another thread is inside
``C_SignInit`` segfaults inside libsofthsm2 (a use after free; it happens with plain
python-pkcs11 and no hsm code too). The scenarios therefore close sessions only between
calls (``scenarios.Gate``), which is what the pool has to survive; ``C_Logout`` is not gated.
Deleting the token directory does not leave SoftHSM working from memory: its objects vanish
at once (lookups find no key) while the sessions stay open and logged in.
"""

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature

from tests.hsm.helpers import (
    ScenarioRun,
    ca_public_key,
    message_for,
    run_scenario,
    unpack_signatures,
    verify_signature,
)


def _invalid_signatures(run: ScenarioRun) -> list[tuple[int, int]]:
    public_key = ca_public_key((run.out_dir / "ca.pem").read_text())
    bad = []
    for thread, sequence, signature in unpack_signatures(
        (run.out_dir / "signatures.bin").read_bytes()
    ):
        try:
            verify_signature(public_key, signature, message_for(thread, sequence))
        except InvalidSignature:
            bad.append((thread, sequence))
    return bad


def _outcomes(calls: list[list[Any]]) -> Counter[str]:
    return Counter(call[4] for call in calls)


@pytest.mark.parametrize("mode", ["closeall", "logout"])
def test_signing_recovers_from_closed_sessions_and_logout(
    tmp_path: Path, mode: str, hsm_backend: str
) -> None:
    # A tpm2-pkcs11 login unseals the token's key in the TPM (tens of ms): disturbing every
    # 10 ms there mostly hits a token whose repair is still under way (C_Logout answers
    # CKR_USER_NOT_LOGGED_IN), so the TPM is disturbed every 200 ms, each time for real.
    pause, least = ("0.01", 10) if hsm_backend == "softhsm" else ("0.2", 5)
    run = run_scenario("disturb", tmp_path, mode, "1.5", pause, timeout=60,
                       backend=hsm_backend)
    assert run.returncode == 0, run.describe()
    result = run.result
    calls = result["calls"]
    start, end = result["disturb_start"], result["disturb_end"]
    problems: list[str] = []

    # The disturbance really happened and really took the login away.
    if result["return_values"] != {"0": result["disturbances"]}:
        problems.append(f"disturbing calls failed: {result['return_values']}")
    if result["effective_disturbances"] < least:
        problems.append(f"only {result['effective_disturbances']} disturbances took effect")

    outcomes = _outcomes(calls)
    others = {k: v for k, v in outcomes.items() if k not in ("ok", "HsmUnavailable")}
    if others:
        problems.append(f"calls failed with errors other than HsmUnavailable: {others}")
    bad = _invalid_signatures(run)
    if bad:
        problems.append(f"{len(bad)} signatures do not verify")
    during = _outcomes([c for c in calls if start <= c[2] <= end])
    if during["ok"] <= sum(during.values()) / 2:
        problems.append(f"most calls during the disturbance should succeed: {dict(during)}")
    after = _outcomes([c for c in calls if c[2] >= end + 0.25])
    if not after or set(after) != {"ok"}:
        problems.append(f"signing did not recover after the disturbance: {dict(after)}")
    if result["stuck_threads"]:
        problems.append(f"threads stuck: {result['stuck_threads']}")
    if result["failure"] is not None:
        problems.append(f"connection still reports a failure: {result['failure']}")
    assert not problems, "\n".join(problems) + f"\nall outcomes: {dict(outcomes)}"


def test_key_looked_up_while_logged_out_is_retried_not_key_not_found(
    tmp_path: Path, hsm_backend: str
) -> None:
    """A lookup that failed because the process was logged out is a token-state failure even
    if another thread's repair logged the process in before run() looked at the failure."""
    run = run_scenario("lookup-while-logged-out", tmp_path, timeout=60, backend=hsm_backend)
    assert run.returncode == 0, run.describe()
    assert run.result["logout_rv"] == 0
    assert run.result["raised"] is None, run.result
    assert run.result["attempts"] == 2
    assert run.result["later_sign"] == "ok"


# SoftHSM2 only (no hsm_backend): the scenario deletes SoftHSM2's token directory, which has
# no counterpart on a TPM, whose objects live in the TPM and in tpm2-pkcs11's SQLite store.
@pytest.mark.parametrize("variant", ["rmtree", "rmtree-closeall"])
def test_removed_token_gives_hsm_unavailable_in_bounded_time(
    tmp_path: Path, variant: str
) -> None:
    wait = 2.0
    run = run_scenario("remove", tmp_path, variant, str(wait), timeout=60)
    # No crash (a segfault is -11) and no hang (the child joins its threads, then exits).
    assert run.returncode == 0, run.describe()
    result = run.result
    calls = result["calls"]
    removed = result["removed_at"]
    settled = max(removed, result["closed_at"] or 0) + 0.5
    problems: list[str] = []

    if result["stuck_threads"]:
        problems.append(f"threads still inside a call long after the wait: "
                        f"{result['stuck_threads']}")
    after_removal = [c for c in calls if c[2] >= removed]
    outcomes = _outcomes(after_removal)
    others = {k: v for k, v in outcomes.items() if k not in ("ok", "HsmUnavailable")}
    if others:
        problems.append(f"callers got errors other than HsmUnavailable: {others}")
    settled_outcomes = _outcomes([c for c in calls if c[2] >= settled])
    if not settled_outcomes:
        problems.append("no calls were made after the token was gone")
    elif settled_outcomes["HsmUnavailable"] != sum(settled_outcomes.values()):
        problems.append(f"calls after the token was gone: {dict(settled_outcomes)}")
    slowest = max((c[3] - c[2] for c in after_removal), default=0.0)
    if slowest > wait + 1:
        problems.append(f"a call took {slowest:.2f} s (wait_seconds is {wait})")
    bad = _invalid_signatures(run)
    if bad:
        problems.append(f"{len(bad)} signatures do not verify")

    health = result["health"]
    if "raised" in health:
        problems.append(f"health() raised {health['raised']}")
    else:
        if health["ok"] is not False:
            problems.append(f"health() says ok: {health}")
        if "HSM" not in health["detail"]:
            problems.append(f"health() detail does not mention the HSM: {health['detail']!r}")
    if health["seconds"] > 0.5 + 1:
        problems.append(f"health(wait_seconds=0.5) took {health['seconds']:.2f} s")
    assert not problems, "\n".join(problems) + f"\nall outcomes: {dict(outcomes)}"
