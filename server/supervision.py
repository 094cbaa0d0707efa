"""Child processes that live and die with their parent: starting them, stopping them, the
restart pause, and the stop signals."""

import ctypes
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_child(args: Sequence[str], **popen: Any) -> "subprocess.Popen[Any]":
    """A child in a session of its own (a Ctrl-C in the terminal reaches only its parent, which
    stops it) that gets SIGTERM if its parent dies without stopping it."""
    return subprocess.Popen(list(args), start_new_session=True, preexec_fn=die_with_parent,
                            **popen)


def stop_children(children: Sequence["subprocess.Popen[Any] | None"],
                  timeout: float = 20.0) -> None:
    """SIGTERM to every child still running, then SIGKILL to those not gone after `timeout`."""
    running = [child for child in children if child is not None and child.poll() is None]
    for child in running:
        _signal(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in running:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(child, signal.SIGKILL)
            child.wait()


def _signal(child: "subprocess.Popen[Any]", number: int) -> None:
    try:
        child.send_signal(number)
    except ProcessLookupError:
        pass


class StopSignals:
    """SIGTERM and SIGINT set an event instead of raising KeyboardInterrupt or killing the
    process: the main loop notices it and stops its children in order."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: int | None = None
        for number in STOP_SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.received = number
        self.event.set()

    @property
    def stopping(self) -> bool:
        return self.event.is_set()

    def wait_while_running(self, child: "subprocess.Popen[Any]", poll: float = 0.5) -> None:
        """Return when `child` exits or a stop signal arrives."""
        while child.poll() is None and not self.event.wait(poll):
            pass


def exit_quietly_on_signals() -> None:
    """In a child: SIGTERM and SIGINT end the process with status 0, without a traceback
    (uvicorn, after its graceful shutdown, raises the signal again for the previous handler)."""
    def leave(number: int, frame: FrameType | None) -> None:
        raise SystemExit(0)
    for number in STOP_SIGNALS:
        signal.signal(number, leave)


@dataclass
class Backoff:
    """The pause before restarting a child that exited: it doubles while the child keeps dying
    soon after starting, up to ``longest``, and starts over once a child lived ``settled``
    seconds (it then died of something new)."""

    first: float = 1.0
    longest: float = 30.0
    settled: float = 60.0
    _next: float = 0.0

    def pause_after(self, lived_seconds: float) -> float:
        """The pause before the next start of a child that lived ``lived_seconds``."""
        if lived_seconds >= self.settled or self._next == 0.0:
            self._next = self.first
        pause = self._next
        self._next = min(pause * 2, self.longest)
        return pause
