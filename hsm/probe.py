"""Whether a new process could sign: ``python -m hsm.probe`` loads the module, opens the token,
logs in, signs once with the CA key and checks the signature against the CA certificate.

A process whose module can no longer be used (hsm/faults.py, ``LIBRARY``) cannot find out
in-process when the HSM is back; it runs this probe in a short-lived child instead, and
replaces itself once the probe passes. The settings come on the child's stdin as JSON, so the
PIN never appears in a command line. Exit status: 0 it signs, 1 not now (try again later), 2
the token refused the PIN (trying again could lock it). One line on stdout says why.
"""

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_PIN_REJECTED = 2


@dataclass(frozen=True)
class ProbeRequest:
    """What the probe needs; the PIN never appears in repr()."""

    module_path: str
    token_label: str
    pin: str = field(repr=False)
    key_label: str
    ca_certificate_path: str


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    retry: bool  # False: do not probe again (the PIN was refused)
    detail: str


def probe(request: ProbeRequest, timeout: float = 15.0) -> ProbeResult:
    """Run the probe in a child process (its environment is this process's)."""
    try:
        child = subprocess.run([sys.executable, "-m", "hsm.probe"],
                               input=json.dumps(asdict(request)).encode(),
                               capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, True, f"the HSM probe did not finish within {timeout:.0f} s")
    detail = child.stdout.decode(errors="replace").strip().splitlines()
    line = detail[-1] if detail else f"the HSM probe exited with {child.returncode}"
    return ProbeResult(child.returncode == EXIT_OK, child.returncode != EXIT_PIN_REJECTED, line)


def _sign_once(request: ProbeRequest) -> None:
    # Here, in the child only: the parent imports this module just to start the probe.
    from hsm.authority import load_certificate
    from hsm.ca_key import CaSigner, check_matches
    from hsm.connection import HsmConfig, HsmConnection

    certificate = load_certificate(request.ca_certificate_path)
    connection = HsmConnection(HsmConfig(module_path=request.module_path, pin=request.pin,
                                         token_label=request.token_label, pool_size=1,
                                         wait_seconds=3.0))
    signer = CaSigner.for_public_key(connection, request.key_label, certificate.public_key)
    check_matches(signer, certificate.public_key, request.ca_certificate_path)


def main() -> int:
    from hsm.errors import HsmError, PinRejected  # the child's imports, as in _sign_once

    try:
        request = ProbeRequest(**json.loads(sys.stdin.read()))
    except (ValueError, TypeError) as exc:
        print(f"bad probe request: {type(exc).__name__}")
        return EXIT_UNAVAILABLE
    try:
        _sign_once(request)
    except PinRejected as exc:
        print(exc)
        return EXIT_PIN_REJECTED
    except (HsmError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}")
        return EXIT_UNAVAILABLE
    except Exception as exc:  # noqa: BLE001 - any other failure is "not now", said in one line
        print(f"{type(exc).__name__}: {exc}")
        return EXIT_UNAVAILABLE
    print("the HSM signs")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
