"""The HTTP worker processes of ``certs serve``.

Each worker gets its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads new connections over the workers. With one shared socket, the worker that wakes first
accepts every waiting connection and a burst of clients all lands on one core. Only the worker
holds its socket: when it dies the socket closes with it and the kernel stops sending it
connections, until its replacement listens on a fresh one.

A worker is ``python -m server.workers FD``: it reads the same ``MF_*`` settings as its parent
and serves on the socket it inherited as descriptor FD. It runs in a session of its own and gets
SIGTERM when its parent dies, so a Ctrl-C in the terminal reaches only the parent, which stops
the workers in order.
"""

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from authority.logs import uvicorn_log_config
from authority.settings import Settings, load_settings
from server.port_guard import address_family
from server.supervision import Backoff, exit_quietly_on_signals, start_child, stop_children

_POLL_SECONDS = 0.5


def tcp_listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening socket created with IPPROTO_TCP, so that asyncio turns Nagle off on every
    accepted connection (with protocol 0 it does not, and each response then waits for the
    client's delayed ACK: about 40 ms)."""
    listener = socket.socket(address_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    return listener


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    """The HTTP server of one worker."""
    return uvicorn.Config(
        "server.http.app:create_app", factory=True, host=settings.http_host,
        port=settings.http_port, log_config=uvicorn_log_config(settings.log_level),
        access_log=False,
        # The peer address is the one that connected: X-Forwarded-For from loopback would
        # otherwise make any local process look like the trusted proxy (EST re-enroll).
        proxy_headers=False,
        loop="uvloop", http="httptools",
        ssl_certfile=settings.server_cert or None, ssl_keyfile=settings.server_key or None,
    )


@dataclass
class _Slot:
    process: "subprocess.Popen[bytes]"
    started: float
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # set while the slot waits to restart its worker


class WorkerPool:
    """Runs ``count`` workers until `stop` is set; a worker that dies is replaced, after a pause
    that grows while it keeps dying soon after starting."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self._host = host
        self._port = port
        self._count = count

    def run(self, stop: threading.Event) -> None:
        slots: list[_Slot] = []
        try:
            for index in range(self._count):
                slots.append(self._start(index))
            while not stop.wait(_POLL_SECONDS):
                for index, slot in enumerate(slots):
                    slots[index] = self._watch(index, slot)
        finally:
            stop_children([slot.process for slot in slots], timeout=30)

    def _watch(self, index: int, slot: _Slot) -> _Slot:
        now = time.monotonic()
        if slot.restart_at is None:
            code = slot.process.poll()
            if code is None:
                return slot
            pause = slot.backoff.pause_after(now - slot.started)
            print(f"certs: HTTP worker {slot.process.pid} exited with {code}; "
                  f"restarting in {pause:.0f} s", file=sys.stderr, flush=True)
            slot.restart_at = now + pause
            return slot
        if now < slot.restart_at:
            return slot
        replacement = self._start(index)
        replacement.backoff = slot.backoff
        return replacement

    def _start(self, index: int) -> _Slot:
        listener = tcp_listener(self._host, self._port, reuse_port=True)
        try:
            fd = listener.fileno()
            process = start_child([sys.executable, "-m", "server.workers", str(fd), str(index)],
                                  pass_fds=(fd,))
        finally:
            listener.close()  # the child has its own copy of the socket from here on
        return _Slot(process, time.monotonic())


def main(argv: list[str]) -> int:
    """A worker: serve on the inherited socket until SIGTERM."""
    exit_quietly_on_signals()
    listener = socket.socket(fileno=int(argv[0]))
    server = uvicorn.Server(uvicorn_config(load_settings()))
    server.run(sockets=[listener])
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
