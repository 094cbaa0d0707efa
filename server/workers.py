"""The HTTP worker processes of ``certs serve``.

Each worker gets its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads new connections over the workers. With one shared socket, the worker that wakes first
accepts every waiting connection and a burst of clients all lands on one core. Only the worker
holds its socket: when it dies the socket closes with it and the kernel stops sending it
connections, until its replacement listens on a fresh one.

A worker is ``python -m server.workers FD INDEX STATUS``: it reads the same ``MF_*`` settings as
its parent and serves on the socket it inherited as descriptor FD. It runs in a session of its
own and gets SIGTERM when its parent dies, so a Ctrl-C in the terminal reaches only the parent,
which stops the workers in order.

A worker writes to its status socket STATUS (server/worker.py) that it is ``ready``, or that it
should be replaced (it cannot sign, and a new process could), handing its listening socket over.
The pool then starts its successor on that same socket and stops the old worker once the
successor is ready: the port never lacks a listener and no waiting connection is reset. One
replacement runs at a time, so that the workers are not all starting at once.
"""

import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from authority import fitness
from authority.fitness import EXIT_REPLACE
from authority.logs import configure_logging, uvicorn_log_config
from authority.settings import Settings, load_settings
from server.port_guard import address_family
from server.supervision import Backoff, exit_quietly_on_signals, start_child, stop_children

_POLL_SECONDS = 0.2
# A successor that does not say ready in this long is stopped, and tried again later.
READY_TIMEOUT_SECONDS = 120.0
# A worker told to stop (replaced) that is still running after this long is killed.
RETIRE_TIMEOUT_SECONDS = 30.0


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
    status: socket.socket | None  # the pool's end of the worker's status socket
    backoff: Backoff = field(default_factory=Backoff)
    restart_at: float | None = None  # set while the slot waits to restart its worker
    ready: bool = False
    waiting: bool = False  # a successor waiting for the HSM: no start-up deadline
    replace: str | None = None  # why the worker asked to be replaced
    unfit: bool = False  # it cannot sign: its successor waits for the HSM
    successor: "_Slot | None" = None
    retry_replace_at: float = 0.0
    listener: int | None = None  # the listening socket the worker handed over
    _pending: bytes = b""

    def read_status(self) -> None:
        """Take in what the worker wrote: ``ready``, ``replace <reason>`` (with its socket)."""
        if self.status is None:
            return
        try:
            data, fds, _, _ = socket.recv_fds(self.status, 4096, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        for fd in fds:
            if self.listener is None:
                self.listener = fd
            else:
                os.close(fd)
        if not data:
            self.close_status()
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "ready":
                self.ready = True
            elif word == "waiting":
                self.waiting = True
            elif word == "starting":
                self.waiting = False
                self.started = time.monotonic()
            elif word in ("replace", "unfit") and self.replace is None:
                self.replace = rest or "asked to be replaced"
                self.unfit = word == "unfit"

    def close_status(self) -> None:
        if self.status is not None:
            self.status.close()
            self.status = None
        self.close_listener()

    def close_listener(self) -> None:
        if self.listener is not None:
            os.close(self.listener)
            self.listener = None


class WorkerPool:
    """Runs ``count`` workers until `stop` is set; a worker that dies is replaced, after a pause
    that grows while it keeps dying soon after starting; a worker that asks to be replaced is,
    once its successor is ready."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self._host = host
        self._port = port
        self._count = count
        self._retiring: list[tuple[_Slot, float]] = []

    def run(self, stop: threading.Event) -> None:
        slots: list[_Slot] = []
        try:
            for index in range(self._count):
                slots.append(self._start(index))
            while not stop.is_set():
                self._read_status(slots)
                for index, slot in enumerate(slots):
                    if not stop.is_set():
                        slots[index] = self._watch(index, slot, slots)
                self._reap_retiring()
        finally:
            every = [s for slot in slots for s in (slot, slot.successor) if s is not None]
            every += [slot for slot, _ in self._retiring]
            stop_children([slot.process for slot in every], timeout=30)
            for slot in every:
                slot.close_status()

    def _read_status(self, slots: list[_Slot]) -> None:
        watched = {s.status.fileno(): s for slot in slots for s in (slot, slot.successor)
                   if s is not None and s.status is not None}
        if not watched:
            time.sleep(_POLL_SECONDS)
            return
        readable, _, _ = select.select(list(watched), [], [], _POLL_SECONDS)
        for fd in readable:
            watched[fd].read_status()

    def _watch(self, index: int, slot: _Slot, slots: list[_Slot]) -> _Slot:
        now = time.monotonic()
        if slot.successor is not None:
            return self._watch_successor(slot, now)
        if slot.restart_at is None:
            code = slot.process.poll()
            if code is None:
                if slot.replace is not None and now >= slot.retry_replace_at and \
                        (slot.unfit or not self._replacing(slots)):
                    what = "a successor that waits for the HSM" if slot.unfit else \
                        "its successor"
                    print(f"certs: HTTP worker {slot.process.pid} asks to be replaced "
                          f"({slot.replace}); starting {what}", file=sys.stderr, flush=True)
                    slot.successor = self._start(index, slot.listener, wait=slot.unfit)
                    slot.close_listener()  # the successor has its own copy
                return slot
            slot.close_status()
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

    @staticmethod
    def _replacing(slots: list[_Slot]) -> bool:
        """Whether a successor is starting (one at a time: the workers' start-ups would
        otherwise share the cores); successors waiting for the HSM do not count."""
        return any(slot.successor is not None and not slot.successor.waiting
                   for slot in slots)

    def _watch_successor(self, slot: _Slot, now: float) -> _Slot:
        successor = slot.successor
        assert successor is not None
        if successor.ready or slot.process.poll() is not None:
            slot.successor = None
            self._retire(slot)
            return successor
        code = successor.process.poll()
        timed_out = not successor.waiting and now - successor.started > READY_TIMEOUT_SECONDS
        if code is None and not timed_out:
            return slot
        if code is None:
            stop_children([successor.process], timeout=5)
        successor.close_status()
        pause = slot.backoff.pause_after(now - successor.started)
        print(f"certs: the successor of HTTP worker {slot.process.pid} "
              f"{'did not get ready' if code is None else f'exited with {code}'}; "
              f"trying again in {pause:.0f} s", file=sys.stderr, flush=True)
        slot.successor = None
        slot.retry_replace_at = now + pause
        return slot

    def _retire(self, slot: _Slot) -> None:
        """SIGTERM to a replaced worker: it finishes its requests and exits."""
        if slot.process.poll() is None:
            try:
                slot.process.terminate()
            except ProcessLookupError:
                pass
        self._retiring.append((slot, time.monotonic() + RETIRE_TIMEOUT_SECONDS))

    def _reap_retiring(self) -> None:
        still: list[tuple[_Slot, float]] = []
        for slot, deadline in self._retiring:
            slot.read_status()
            if slot.process.poll() is not None:
                slot.close_status()
            elif time.monotonic() > deadline:
                slot.process.kill()
                slot.process.wait()
                slot.close_status()
            else:
                still.append((slot, deadline))
        self._retiring = still

    def _start(self, index: int, handed_over: int | None = None, *, wait: bool = False
               ) -> _Slot:
        """A worker on a new listening socket, or on the one its predecessor handed over;
        with ``wait``, one that waits for the HSM before it opens it."""
        if handed_over is None:
            listener = tcp_listener(self._host, self._port, reuse_port=True)
        else:
            listener = socket.socket(fileno=os.dup(handed_over))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        try:
            fd = listener.fileno()
            command = [sys.executable, "-m", "server.workers", str(fd), str(index),
                       str(theirs.fileno())] + (["wait"] if wait else [])
            process = start_child(command, pass_fds=(fd, theirs.fileno()))
        except BaseException:
            ours.close()
            raise
        finally:
            listener.close()  # the child has its own copy of the socket from here on
            theirs.close()
        return _Slot(process, time.monotonic(), ours)


def main(argv: list[str]) -> int:
    """A worker: serve on the inherited socket until SIGTERM, or until it is replaced. With
    ``wait`` (the successor of an unfit worker) it first waits until a new process can sign."""
    # Here: the worker's app and server stack are loaded in the worker, not in the pool.
    from server.worker import StatusChannel, WorkerServer, app_factory

    exit_quietly_on_signals()
    listener = socket.socket(fileno=int(argv[0]))
    status = StatusChannel(int(argv[2]) if len(argv) > 2 else None)
    settings = load_settings()
    if argv[3:4] == ["wait"]:
        configure_logging(settings.log_level)
        status.send("waiting")
        fitness.wait_until_usable(settings, threading.Event(), role="http", at_once=True)
        status.send("starting")
    config = uvicorn_config(settings)
    server = WorkerServer(config, status, listener)
    config.app = app_factory(settings, server)
    try:
        server.run(sockets=[listener])
    finally:
        server.stopping.set()
    if server.replaced:
        return EXIT_REPLACE
    return 0 if server.started else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
