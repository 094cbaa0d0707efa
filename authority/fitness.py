"""Whether this process can still sign, and what it does when it cannot (hsm/faults.py).

A process whose PKCS#11 module can no longer be used (``connection.unrecoverable``) logs
``connection.unrecoverable`` with the reason; from then on it answers signing requests with 503
at once and goes on serving what needs no HSM. Only a new process loads the module afresh, and
one started before the HSM is back could not sign either; so the HSM is probed in a
short-lived child (``python -m hsm.probe``) every ``PROBE_SECONDS``, and the new process opens
the HSM once the probe signs. An HTTP worker's successor does the probing itself (it starts
right away and waits, so that its start-up costs nothing once the HSM is back); the scheduler,
and an HTTP worker that started degraded (without its HSM), probe and then ask to be replaced.
"""

import logging
import os
import threading
from collections.abc import Callable

from authority.logs import Fields
from authority.settings import Settings
from authority.wiring import probe_request
from hsm.authority import CertificateAuthority
from hsm.probe import probe

# The exit status of a process that asks to be started again at once (EX_TEMPFAIL).
EXIT_REPLACE = 75
PROBE_SECONDS = 2.0
WATCH_SECONDS = 0.2
log = logging.getLogger("certs.fitness")


def wait_until_usable(settings: Settings, stop: threading.Event, role: str,
                      interval: float = PROBE_SECONDS, *, at_once: bool = False) -> bool:
    """Probe the HSM in a child process every ``interval`` (the first time at once if asked)
    until it signs (True), ``stop`` is set or the token refused the PIN (False: probing again
    could lock it)."""
    request = probe_request(settings)
    wait = 0.0 if at_once else interval
    while not stop.wait(wait):
        wait = interval
        result = probe(request)
        if result.ok:
            log.error(Fields(event="hsm.usable", role=role, pid=os.getpid(),
                             msg="a new process can sign with the HSM again"))
            return True
        if not result.retry:
            log.error(Fields(event="hsm.probe_stopped", role=role, pid=os.getpid(),
                             reason=result.detail,
                             msg="not probing again: a restart by the operator is needed"))
            return False
    return False


def report_unfit(role: str, reason: str) -> None:
    log.error(Fields(event="connection.unrecoverable", role=role, pid=os.getpid(),
                     reason=reason,
                     msg="this process cannot sign again: signing answers 503 until a new "
                         "process that can sign replaces it"))


def watch(authority: CertificateAuthority, settings: Settings, *, role: str,
          degraded: str | None, stop: threading.Event,
          on_usable: Callable[[str], None],
          on_unfit: Callable[[str], None] | None = None) -> threading.Thread:
    """A daemon thread that watches whether this process should be replaced. When the
    connection becomes unrecoverable it calls ``on_unfit(reason)`` if given (the replacement
    waits for the HSM itself); otherwise, and for a process that started degraded, it probes the
    HSM and calls ``on_usable(reason)`` once a new process can sign."""

    def run() -> None:
        if degraded is not None:
            log.error(Fields(event="worker.degraded", role=role, pid=os.getpid(),
                             reason=degraded))
            if wait_until_usable(settings, stop, role):
                on_usable("the HSM signs again")
            return
        while not stop.wait(WATCH_SECONDS):
            reason = authority.connection.unrecoverable
            if reason is not None:
                report_unfit(role, reason)
                if on_unfit is not None:
                    on_unfit(reason)
                elif wait_until_usable(settings, stop, role, at_once=True):
                    on_usable(f"{reason}; the HSM signs again")
                return

    thread = threading.Thread(target=run, name="certs-fitness", daemon=True)
    thread.start()
    return thread
