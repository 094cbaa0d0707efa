"""The HTTP worker processes of ``certs serve``.

Each worker gets its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads new connections over the workers. With one shared socket, the worker that wakes first
accepts every waiting connection and a burst of clients all lands on one core.
"""

import ctypes
import multiprocessing
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn

_PR_SET_PDEATHSIG = 1


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


def _serve(config: uvicorn.Config, listener: socket.socket) -> None:
    """A worker's whole life: it dies with the parent, then serves until SIGTERM."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    uvicorn.Server(config).run(sockets=[listener])


class WorkerPool:
    """Runs ``count`` workers until SIGTERM or SIGINT; a worker that dies is replaced."""

    def __init__(self, config: uvicorn.Config, port: int, count: int) -> None:
        self._config = config
        self._listeners = [tcp_listener(port, reuse_port=True) for _ in range(count)]
        self._context = multiprocessing.get_context("spawn")
        self._stopping = threading.Event()

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        slots = [self._start(index) for index in range(len(self._listeners))]
        pauses = [1.0] * len(slots)
        try:
            while not self._stopping.wait(0.5):
                for index, (process, started) in enumerate(slots):
                    if process.is_alive():
                        continue
                    # A worker that keeps dying at once is restarted ever more slowly.
                    pauses[index] = 1.0 if time.monotonic() - started > 60 else \
                        min(pauses[index] * 2, 30.0)
                    print(f"certs: HTTP worker {process.pid} exited with {process.exitcode}; "
                          f"restarting in {pauses[index]:.0f} s", file=sys.stderr)
                    if self._stopping.wait(pauses[index]):
                        break
                    slots[index] = self._start(index)
        finally:
            self._stop_all([process for process, _ in slots])

    def _start(self, index: int) -> tuple[BaseProcess, float]:
        process = self._context.Process(target=_serve, name=f"certs-http-{index}",
                                        args=(self._config, self._listeners[index]))
        process.start()
        return process, time.monotonic()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

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
