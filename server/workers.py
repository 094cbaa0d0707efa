"""The HTTP worker processes of ``certs serve``.

Each worker gets its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads new connections over the workers. With one shared socket, the worker that wakes first
accepts every waiting connection and a burst of clients all lands on one core. Only the worker
holds its socket: when it dies the socket closes with it and the kernel stops sending it
connections, until its replacement listens on a fresh one.
"""

import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

from server.supervision import Backoff, die_with_parent

_POLL_SECONDS = 0.5


def tcp_listener(port: int, *, reuse_port: bool) -> socket.socket:
    """A listening socket created with IPPROTO_TCP, so that asyncio turns Nagle off on every
    accepted connection (with protocol 0 it does not, and each response then waits for the
    client's delayed ACK: about 40 ms)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("0.0.0.0", port))
    listener.set_inheritable(True)
    return listener


def _serve(config: uvicorn.Config, listener: socket.socket, parent: int) -> None:
    """A worker's whole life: it dies with the parent, then serves until SIGTERM."""
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        return
    uvicorn.Server(config).run(sockets=[listener])


@dataclass
class _Slot:
    process: BaseProcess
    started: float
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # set while the slot waits to restart its worker


class WorkerPool:
    """Runs ``count`` workers until SIGTERM or SIGINT; a worker that dies is replaced, after a
    pause that grows while it keeps dying soon after starting."""

    def __init__(self, config: uvicorn.Config, port: int, count: int) -> None:
        self._config = config
        self._port = port
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False  # set by the signal handler: a plain flag, no lock to take

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        slots = [self._start(index) for index in range(self._count)]
        try:
            while not self._stopping:
                time.sleep(_POLL_SECONDS)
                for index, slot in enumerate(slots):
                    if not self._stopping:
                        slots[index] = self._watch(index, slot)
        finally:
            self._stop_all([slot.process for slot in slots])

    def _watch(self, index: int, slot: _Slot) -> _Slot:
        now = time.monotonic()
        if slot.restart_at is None:
            if slot.process.is_alive():
                return slot
            pause = slot.backoff.pause_after(now - slot.started)
            print(f"certs: HTTP worker {slot.process.pid} exited with "
                  f"{slot.process.exitcode}; restarting in {pause:.0f} s", file=sys.stderr)
            slot.restart_at = now + pause
            return slot
        if now < slot.restart_at:
            return slot
        replacement = self._start(index)
        replacement.backoff = slot.backoff
        return replacement

    def _start(self, index: int) -> _Slot:
        listener = tcp_listener(self._port, reuse_port=True)
        try:
            process = self._context.Process(target=_serve, name=f"certs-http-{index}",
                                            args=(self._config, listener, os.getpid()))
            process.start()  # the child has its own copy of the socket from here on
        finally:
            listener.close()
        return _Slot(process, time.monotonic())

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _stop_all(self, processes: list[BaseProcess]) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + 30
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
