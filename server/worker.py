"""One HTTP worker process: serves on a socket it inherited, and tells its pool how it is.

It writes one line per event to its status socket (``server/workers.py`` reads it):

- ``ready`` once it listens;
- ``unfit <reason>`` when its PKCS#11 module can no longer be used (``connection.unrecoverable``):
  the pool starts a successor with ``wait``, which probes the HSM until a new process can sign
  (``python -m hsm.probe``), then opens it and serves;
- ``replace <reason>`` when it started degraded (without its HSM: it serves views, lists,
  /health and the CRL, and answers 503 to signing at once) and a probe now signs;
- ``waiting`` (a successor) while it waits for the HSM, ``starting`` when it stops waiting.

With ``unfit`` and ``replace`` it hands its listening socket over (SCM_RIGHTS): the pool gives
that same socket to the successor, so the connections waiting in its queue are accepted by the
successor instead of being reset when this worker closes it. The pool stops this worker once the
successor is ready. Without a pool, the worker stops on its own instead.
"""

import asyncio
import gc
import socket
import threading
from typing import Any

import uvicorn
from litestar.types import ASGIApp

from authority import fitness, tracing
from authority.logs import configure_logging
from authority.settings import Settings
from authority.wiring import open_serving
from server.http.app import create_app
from server.http.ocsp_asgi import with_ocsp_front

# How long a stopping worker still reads requests from connections it accepted.
DRAIN_SECONDS = 0.3


class StatusChannel:
    """This worker's end of the socket to the pool; silent when there is none or the pool is
    gone."""

    def __init__(self, fd: int | None) -> None:
        self._socket = socket.socket(fileno=fd) if fd is not None else None
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def send(self, line: str, fd: int | None = None) -> None:
        """One line, with the descriptor ``fd`` attached if given."""
        if self._socket is None:
            return
        data = (line.replace("\n", " ") + "\n").encode()
        with self._lock:
            try:
                socket.send_fds(self._socket, [data], [fd] if fd is not None else [])
            except OSError:
                self._socket = None


class WorkerServer(uvicorn.Server):
    """uvicorn's server that says ``ready`` once its socket accepts connections, and asks to
    be replaced (or stops, with no pool to ask) when it should be."""

    def __init__(self, config: uvicorn.Config, status: StatusChannel,
                 listener: socket.socket) -> None:
        super().__init__(config)
        self.status = status
        self.listener = listener
        self.replaced = False
        self.stopping = threading.Event()  # set when the server stops

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.status.send("ready")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop accepting first, and give the connections accepted just before a moment to
        send their request: uvicorn closes a connection it has not read a request from yet,
        and its client would see it dropped. (Closing this process's listening socket leaves
        a successor's copy of it listening.)"""
        for server in self.servers:
            server.close()
        await asyncio.sleep(DRAIN_SECONDS)
        await super().shutdown(sockets)

    def report_unfit(self, reason: str) -> None:
        """Ask for a successor that waits for the HSM (this worker serves meanwhile)."""
        self._ask("unfit", reason)

    def ask_replacement(self, reason: str) -> None:
        """Ask for a successor that opens the HSM at once."""
        self._ask("replace", reason)

    def _ask(self, word: str, reason: str) -> None:
        self.replaced = True
        self.status.send(f"{word} {reason}", self.listener.fileno())
        if not self.status.connected:
            self.should_exit = True


def app_factory(settings: Settings, server: WorkerServer) -> Any:
    """The ``create_app`` of this worker: its parts are opened in degraded mode when the HSM
    cannot be, and watched for the moment the worker should be replaced."""

    def create() -> ASGIApp:
        configure_logging(settings.log_level)
        tracing.setup(settings.jaeger_url)
        components = open_serving(settings)
        fitness.watch(components.authority, settings, role="http",
                      degraded=components.degraded, stop=server.stopping,
                      on_usable=server.ask_replacement, on_unfit=server.report_unfit)
        app = with_ocsp_front(create_app(settings, components))
        # The start-up heap (modules, app, pools) is never garbage: full collections skip it.
        gc.freeze()
        return app

    return create

