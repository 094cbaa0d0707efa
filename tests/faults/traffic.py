"""Clients that keep a running service busy while faults are injected, recording every call.

Each call is made on a connection of its own (no keep-alive), as many clients do, so a call
that cannot connect shows a port without a listener.
"""

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Call:
    kind: str  # issue, view, list, health, crl
    started: float  # time.monotonic()
    ended: float
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    error: str  # the "error" of the body, or the transport error's name
    body: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Traffic:
    """Threads calling the service until `stop()`: issuers POST /certs, a reader cycles over
    view, list, /health and /crl."""

    base_url: str
    token: str
    thing_id: str
    serial: str  # a certificate issued before the traffic starts, for the views
    issuers: int = 3
    pause: float = 0.05
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for number in range(self.issuers):
            self._spawn(f"issuer-{number}", self._issue)
        self._spawn("reader", self._read)

    def stop(self) -> list[Call]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        with self._lock:
            return sorted(self.calls, key=lambda call: call.started)

    def _spawn(self, name: str, work: Callable[[httpx.Client], None]) -> None:
        def loop() -> None:
            limits = httpx.Limits(max_keepalive_connections=0)
            with httpx.Client(base_url=self.base_url, timeout=30, limits=limits) as client:
                while not self._stop.is_set():
                    work(client)
                    self._stop.wait(self.pause)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _record(self, kind: str, send: Callable[[], httpx.Response]) -> None:
        started = time.monotonic()
        try:
            response = send()
        except httpx.TransportError as exc:
            call = Call(kind, started, time.monotonic(), 0, type(exc).__name__)
        else:
            ended = time.monotonic()
            body: dict[str, object] = {}
            if response.headers.get("content-type", "").startswith("application/"):
                try:
                    parsed = response.json()
                    body = parsed if isinstance(parsed, dict) else {}
                except ValueError:
                    body = {}
            call = Call(kind, started, ended, response.status_code, str(body.get("error", "")),
                        body)
        with self._lock:
            self.calls.append(call)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _issue(self, client: httpx.Client) -> None:
        body = {"thing_id": self.thing_id, "key_type": "ec", "ttl": "10h"}
        self._record("issue", lambda: client.post("/certs", json=body, headers=self._headers()))

    def _read(self, client: httpx.Client) -> None:
        self._record("view", lambda: client.get(f"/certs/{self.serial}",
                                                headers=self._headers()))
        self._record("list", lambda: client.get(f"/things/{self.thing_id}/serials",
                                                headers=self._headers()))
        self._record("health", lambda: client.get("/health"))
        self._record("crl", lambda: client.get("/crl"))


def between(calls: list[Call], start: float, end: float, kind: str | None = None) -> list[Call]:
    """The calls that started in [start, end), of one kind if given."""
    return [call for call in calls
            if start <= call.started < end and (kind is None or call.kind == kind)]


def latency(calls: list[Call]) -> dict[str, float]:
    """p50 and max of the calls' durations, in milliseconds."""
    if not calls:
        return {"count": 0}
    seconds = [call.seconds for call in calls]
    return {"count": len(seconds), "p50_ms": round(statistics.median(seconds) * 1000, 1),
            "max_ms": round(max(seconds) * 1000, 1)}
