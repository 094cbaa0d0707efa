"""Scenarios the hsm tests run in a child interpreter, each with a token of its own.

    python -m tests.hsm.scenarios <scenario> <out_dir> [args...]

A scenario creates a token under ``out_dir`` on the backend named by CERTS_TEST_HSM_BACKEND
(SoftHSM2: its own SOFTHSM2_CONF; tpm2: its own swtpm and tpm2-abrmd, stopped when the scenario
ends; either set up before the PKCS#11 module is loaded), a CA key in it, and then does
something that could crash or break the process: many threads signing, sessions closed or
logged out under running signers, the token deleted. It writes ``out_dir/result.json`` (and
``signatures.bin``, verified by the parent with ``cryptography``) and exits; the parent
asserts on the exit code and the results. Nothing is mocked: the threads call the real
``hsm`` code against the real module.
"""

import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devtools import softhsm, tpm2

BACKEND = os.environ.get("CERTS_TEST_HSM_BACKEND", "softhsm")
# Concurrent signers in the disturbance scenarios: tpm2-pkcs11 1.9 is not safe with calls from
# several threads at once (SIGSEGV seen in CI), and a TPM runs one command at a time anyway
# (docs/hsm.md: one session on a TPM).
SIGNER_THREADS = 1 if BACKEND == "tpm2" else 4
_TPMS: list[tpm2.SoftwareTpm] = []
TOKEN_LABEL = "scenario"
PIN = "1111-scenario"
SO_PIN = "2222-scenario"
CA_LABEL = "scenario-ca"


def module_path() -> str:
    return tpm2.find_module() if BACKEND == "tpm2" else softhsm.find_module()


def make_token(out_dir: Path, label: str = TOKEN_LABEL) -> Path:
    """A token of its own for the scenario, and the environment pointing at it (before any
    load): ``out_dir/softhsm`` with SOFTHSM2_CONF, or a software TPM in ``out_dir/tpm2``."""
    if BACKEND == "tpm2":
        from tests.fixtures import tpm2 as tpm2_fixture

        state = out_dir / "tpm2"
        _TPMS.append(tpm2_fixture.start_token(state, label, PIN, SO_PIN, tpm2.SEALING_KEYS))
        return state
    state = out_dir / "softhsm"
    config = softhsm.write_config(state)
    softhsm.init_token(config, label, PIN, SO_PIN)
    os.environ["SOFTHSM2_CONF"] = str(config)
    return state


def add_token(state: Path, label: str) -> None:
    """Another token next to the scenario's first one, made while the module is loaded."""
    if BACKEND == "tpm2":
        tpm2.init_token(_TPMS[0], label, PIN, SO_PIN, keys={})
    else:
        softhsm.init_token(state / "softhsm2.conf", label, PIN, SO_PIN)


def make_authority(out_dir: Path, key_type: str, size: int, pool_size: int,
                   wait_seconds: float) -> Any:
    from hsm.authority import AuthorityConfig, CertificateAuthority
    from hsm.ca_certificate import create_ca
    from hsm.connection import HsmConfig, HsmConnection

    config = HsmConfig(module_path=module_path(), pin=PIN, token_label=TOKEN_LABEL,
                       pool_size=pool_size, wait_seconds=wait_seconds)
    connection = HsmConnection(config)
    ca_path = create_ca(connection, CA_LABEL, key_type, size, "Scenario CA", out_dir / "ca.pem")
    return CertificateAuthority(
        AuthorityConfig(hsm=config, ca_certificate_path=str(ca_path), ca_key_label=CA_LABEL),
        connection=connection,
    )


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


def outcome_of(exc: BaseException) -> str:
    from hsm.errors import HsmUnavailable

    if isinstance(exc, HsmUnavailable):
        return "HsmUnavailable"
    return f"other:{type(exc).__module__}.{type(exc).__name__}: {exc}"[:300]


class Gate:
    """Lets the disturbing thread act only while no signer is inside a PKCS#11 call.

    SoftHSM 2.6.1 frees a session's memory in C_CloseAllSessions while another thread may be
    using it (use after free; it segfaults without any hsm code involved), so closing sessions
    under a signer that is inside the module crashes SoftHSM, not the code under test. The gate
    makes the disturbance land between calls: every session the pool holds, and the anchor,
    are closed or logged out under the connection's feet, which is what the pool must survive.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._inside = 0
        self._exclusive = False

    def enter(self) -> None:
        with self._condition:
            while self._exclusive:
                self._condition.wait()
            self._inside += 1

    def leave(self) -> None:
        with self._condition:
            self._inside -= 1
            self._condition.notify_all()

    def exclusive(self, action: Callable[[], Any]) -> Any:
        with self._condition:
            self._exclusive = True
            while self._inside:
                self._condition.wait()
        try:
            return action()
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


class Signers:
    """Threads that call ``authority.signer.sign`` in a loop and record every call."""

    def __init__(self, authority: Any, threads: int, gate: Gate | None, t0: float) -> None:
        from tests.hsm.helpers import message_for, pack_signature

        self.authority = authority
        self.gate = gate
        self.t0 = t0
        self.stop = threading.Event()
        self.calls: list[list[Any]] = []  # [thread, sequence, start, end, outcome]
        self.signatures: list[bytes] = []
        self._lock = threading.Lock()
        self._message_for = message_for
        self._pack = pack_signature
        self.threads = [
            threading.Thread(target=self._run, args=(index,), daemon=True)
            for index in range(threads)
        ]

    def _run(self, index: int) -> None:
        sequence = 0
        while not self.stop.is_set():
            message = self._message_for(index, sequence)
            if self.gate:
                self.gate.enter()
            start = time.monotonic() - self.t0
            try:
                signature = self.authority.signer.sign(message)
                outcome = "ok"
            except Exception as exc:  # noqa: BLE001 - every outcome is recorded for the parent
                signature = None
                outcome = outcome_of(exc)
            finally:
                if self.gate:
                    self.gate.leave()
            end = time.monotonic() - self.t0
            with self._lock:
                self.calls.append([index, sequence, start, end, outcome])
                if signature is not None:
                    self.signatures.append(self._pack(index, sequence, signature))
            sequence += 1

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self, join_seconds: float) -> list[int]:
        """Stop the threads; returns the indexes of threads still stuck after the wait."""
        self.stop.set()
        deadline = time.monotonic() + join_seconds
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [i for i, thread in enumerate(self.threads) if thread.is_alive()]

    def save(self, out_dir: Path) -> None:
        with self._lock:
            (out_dir / "signatures.bin").write_bytes(b"".join(self.signatures))


# ---- scenarios -----------------------------------------------------------------------------


def stress(out_dir: Path, key_type: str, size: str, threads: str, pool: str,
           seconds: str) -> None:
    """Many threads signing through one connection (FINDINGS 1: this crashed without locking)."""
    make_token(out_dir)
    authority = make_authority(out_dir, key_type, int(size), int(pool), wait_seconds=5.0)
    signers = Signers(authority, int(threads), None, time.monotonic())
    signers.start()
    time.sleep(float(seconds))
    stuck = signers.finish(join_seconds=15)
    signers.save(out_dir)
    per_thread = Counter(call[0] for call in signers.calls if call[4] == "ok")
    errors = Counter(call[4] for call in signers.calls if call[4] != "ok")
    durations = sorted(call[3] - call[2] for call in signers.calls)
    write_result(out_dir, {
        "max_call_seconds": durations[-1] if durations else None,
        "p99_call_seconds": durations[int(len(durations) * 0.99)] if durations else None,
        "calls": len(signers.calls),
        "ok": sum(per_thread.values()),
        "per_thread": {str(k): v for k, v in sorted(per_thread.items())},
        "errors": dict(errors),
        "stuck_threads": stuck,
    })


def disturb(out_dir: Path, mode: str, seconds: str, pause_seconds: str) -> None:
    """Signers keep going while another thread closes all sessions or logs the anchor out."""
    make_token(out_dir)
    authority = make_authority(out_dir, "ec", 256, pool_size=SIGNER_THREADS, wait_seconds=2.0)
    connection = authority.connection
    library = connection.library
    slot_id = connection._token.slot.slot_id
    gate = Gate()
    t0 = time.monotonic()
    signers = Signers(authority, SIGNER_THREADS, gate, t0)
    signers.start()
    time.sleep(0.3)
    disturb_start = time.monotonic() - t0
    pause = float(pause_seconds)
    disturbances = 0
    effective = 0
    return_values: Counter[int] = Counter()
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        if mode == "closeall":
            def close_all() -> bool:
                anchor = connection._anchor_handle
                return_values[library.raw.C_CloseAllSessions(slot_id)] += 1
                # The anchor session is gone: the connection has lost its login.
                return library.session_logged_in(anchor) is None

            effective += gate.exclusive(close_all)
        elif mode == "logout":
            def log_out() -> bool:
                anchor = connection._anchor_handle
                return_values[library.raw.C_Logout(anchor)] += 1
                return library.session_logged_in(anchor) is False

            # tpm2-pkcs11 1.9 can crash (SIGSEGV) when C_Logout runs while another thread is
            # inside C_Sign (seen in 1 of 3 CI runs): on it the login is lost between calls,
            # as when the device drops it, instead of by a racing call.
            effective += gate.exclusive(log_out) if BACKEND == "tpm2" else log_out()
        else:
            raise SystemExit(f"unknown mode {mode}")
        disturbances += 1
        time.sleep(pause)
    disturb_end = time.monotonic() - t0
    time.sleep(1.0)
    stuck = signers.finish(join_seconds=10)
    signers.save(out_dir)
    write_result(out_dir, {
        "calls": signers.calls,
        "disturb_start": disturb_start,
        "disturb_end": disturb_end,
        "disturbances": disturbances,
        "effective_disturbances": effective,
        "return_values": {str(k): v for k, v in return_values.items()},
        "stuck_threads": stuck,
        "failure": connection.failure,
    })


def _remove_directory(directory: Path) -> None:
    """Take `directory` away at one instant (a rename), then delete it: the signers keep
    opening lock files in the token directory, and a plain rmtree can find it not empty."""
    gone = directory.with_name(directory.name + ".removed")
    directory.rename(gone)
    deadline = time.monotonic() + 10
    while gone.exists():
        try:
            shutil.rmtree(gone)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def remove(out_dir: Path, variant: str, wait_seconds: str) -> None:
    """Delete the token directory under running signers (and, optionally, drop the sessions)."""
    state = make_token(out_dir)
    wait = float(wait_seconds)
    authority = make_authority(out_dir, "ec", 256, pool_size=4, wait_seconds=wait)
    connection = authority.connection
    library = connection.library
    slot_id = connection._token.slot.slot_id
    gate = Gate()
    t0 = time.monotonic()
    signers = Signers(authority, 4, gate, t0)
    signers.start()
    time.sleep(0.3)
    removed_at = time.monotonic() - t0
    _remove_directory(state / "tokens")
    closed_at = None
    if variant == "rmtree-closeall":
        time.sleep(0.3)
        closed_at = time.monotonic() - t0
        gate.exclusive(lambda: library.raw.C_CloseAllSessions(slot_id))
    elif variant != "rmtree":
        raise SystemExit(f"unknown variant {variant}")
    time.sleep(1.5 + wait)
    stuck = signers.finish(join_seconds=wait + 5)
    signers.save(out_dir)
    health_start = time.monotonic()
    try:
        health = authority.health(wait_seconds=0.5)
        health_result: dict[str, Any] = {"ok": health.ok, "detail": health.detail}
    except Exception as exc:  # noqa: BLE001 - every outcome is recorded for the parent
        health_result = {"raised": outcome_of(exc)}
    health_result["seconds"] = time.monotonic() - health_start
    write_result(out_dir, {
        "calls": signers.calls,
        "removed_at": removed_at,
        "closed_at": closed_at,
        "wait_seconds": wait,
        "stuck_threads": stuck,
        "health": health_result,
        "failure": connection.failure,
    })


def lookup_while_logged_out(out_dir: Path) -> None:
    """The interleaving behind the KeyNotFound seen under logout/close, made deterministic.

    Thread A's fresh session looks the key up while the process is logged out (NoSuchKey:
    private objects are invisible), and before run() judges that failure, thread B's repair
    has logged the process in again. Here the operation plays both parts: it looks up, and
    logs in (as the repair would) before its failure reaches run().
    """
    from pkcs11 import Mechanism, ObjectClass

    make_token(out_dir)
    authority = make_authority(out_dir, "ec", 256, pool_size=2, wait_seconds=2.0)
    connection = authority.connection
    library = connection.library
    logout_rv = library.raw.C_Logout(connection._anchor_handle)
    attempts: list[str] = []

    def operation(keys: Any) -> bytes:
        attempts.append("lookup")
        try:
            key = keys.session.get_key(label=CA_LABEL, object_class=ObjectClass.PRIVATE_KEY)
        finally:
            if len(attempts) == 1:
                library.login(connection._anchor_handle, PIN)  # what the other thread does
        signature: bytes = key.sign(bytes(32), mechanism=Mechanism.ECDSA)
        return signature

    result: dict[str, Any] = {"logout_rv": logout_rv}
    try:
        connection.run(operation)
        result["raised"] = None
    except Exception as exc:  # noqa: BLE001 - every outcome is recorded for the parent
        result["raised"] = outcome_of(exc)
    result["attempts"] = len(attempts)
    result["later_sign"] = "ok"
    try:
        authority.signer.sign(b"afterwards")
    except Exception as exc:  # noqa: BLE001 - every outcome is recorded for the parent
        result["later_sign"] = outcome_of(exc)
    write_result(out_dir, result)


def startup_errors(out_dir: Path) -> None:
    """Wrong PIN and missing token at start, on a token only this process uses."""
    from hsm.ca_key import CaSigner, generate_ca_key
    from hsm.connection import HsmConfig, HsmConnection

    state = make_token(out_dir)
    module = module_path()
    result: dict[str, Any] = {}

    def attempt(name: str, make: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            value = make()
            result[name] = {"raised": None}
            return value
        except Exception as exc:  # noqa: BLE001 - every outcome is recorded for the parent
            result[name] = {"raised": f"{type(exc).__module__}.{type(exc).__name__}",
                            "message": str(exc), "repr": repr(exc)}
            return None
        finally:
            result[name]["seconds"] = time.monotonic() - start

    wrong_pin = "9876-wrong-pin"
    for index in range(3):
        attempt(f"wrong_pin_{index}",
                lambda: HsmConnection(HsmConfig(module, wrong_pin, TOKEN_LABEL)))
    good = attempt("right_pin_after_failures",
                   lambda: HsmConnection(HsmConfig(module, PIN, TOKEN_LABEL, wait_seconds=5)))
    if good is None:
        write_result(out_dir, result)
        return
    public = generate_ca_key(good, CA_LABEL, "ec", 256)
    signer = CaSigner.for_public_key(good, CA_LABEL, public)
    attempt("sign_before", lambda: signer.sign(b"before"))
    attempt("missing_token",
            lambda: HsmConnection(HsmConfig(module, PIN, "no-such-token", wait_seconds=1)))
    # The failed lookup re-initialised the module (dropping every session of the process):
    # the connection that was already open must repair itself.
    attempt("sign_after_missing_token", lambda: signer.sign(b"after"))
    # A token created after the module was loaded is found (the lookup re-initialises).
    add_token(state, "late-token")
    attempt("late_token", lambda: HsmConnection(HsmConfig(module, PIN, "late-token")))
    attempt("sign_after_late_token", lambda: signer.sign(b"later"))
    write_result(out_dir, result)


SCENARIOS: dict[str, Callable[..., None]] = {
    "stress": stress,
    "disturb": disturb,
    "remove": remove,
    "startup-errors": startup_errors,
    "lookup-while-logged-out": lookup_while_logged_out,
}


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr)
    name, out_dir, *args = sys.argv[1:]
    try:
        SCENARIOS[name](Path(out_dir), *args)
    finally:
        for tpm in _TPMS:
            tpm.stop()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
