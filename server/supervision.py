"""Keeping child processes alive: the restart pause and dying with the parent."""

import ctypes
import signal
from dataclasses import dataclass

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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
