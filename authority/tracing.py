"""OpenTelemetry tracing (SPEC 11), on when MF_JAEGER_URL is set.

``MF_JAEGER_URL`` names an OTLP endpoint, which Jaeger (since 1.35) and every OpenTelemetry
collector ingest: ``http(s)://host:4318`` is OTLP/HTTP (``/v1/traces`` is added when the URL
has no path), ``host:4317`` or ``grpc://host:4317`` is OTLP/gRPC (``grpcs://`` with TLS). The
Jaeger agent form (``host:6831``, ``udp://``) and Jaeger's own collector path (``/api/traces``)
are refused. The standard ``OTEL_*`` variables apply (sampler, batch sizes, service name,
resource attributes, exporter headers).

Spans are exported by a BatchSpanProcessor: a background thread, off the request path. Each
process sets tracing up after it starts (never across a fork). When tracing is off, ``span``
hands out one shared no-op context manager.

A span costs tens of microseconds of CPU in the SDK, several times per request, so this module
keeps its own share small: the resource's hash is computed once (the exporter groups every span
by resource), spans are started and made current by small context managers instead of the SDK's
generator-based ones, ``leaf_span`` starts a span that is not made current (nothing runs inside
it that could be its child), no span is started under a parent that was not sampled (the
sampler would drop it), and ``server_span`` reads the ``traceparent`` straight from the ASGI
header list.
"""

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace.status import Status, StatusCode
from sqlalchemy import event

log = logging.getLogger(__name__)
VARIABLE = "MF_JAEGER_URL"
_AGENT_PORTS = {"6831", "6832", "5775"}
_NOTHING = contextlib.nullcontext()
TraceContext = otel_context.Context
SpanKind = trace.SpanKind


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "http" or "grpc"
    url: str
    insecure: bool = True


def parse_endpoint(url: str) -> Endpoint | None:
    """The OTLP endpoint ``MF_JAEGER_URL`` names, None when empty; ValueError naming the
    variable for the Jaeger agent form or anything else that is not OTLP."""
    text = url.strip()
    if not text:
        return None
    advice = "use http://host:4318 (OTLP/HTTP) or host:4317 (OTLP/gRPC)"
    if "://" not in text:
        text = "grpc://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{VARIABLE} has an invalid port: {url!r}") from None
    if scheme in ("udp", "thrift") or str(port) in _AGENT_PORTS:
        raise ValueError(f"{VARIABLE}={url!r} is the Jaeger agent form, which is not "
                         f"supported; {advice}")
    if not parts.hostname:
        raise ValueError(f"{VARIABLE} names no host: {url!r}; {advice}")
    if scheme in ("http", "https"):
        if parts.path.rstrip("/") == "/api/traces":
            raise ValueError(f"{VARIABLE}={url!r} is Jaeger's Thrift collector; {advice}")
        path = parts.path if parts.path not in ("", "/") else "/v1/traces"
        return Endpoint("http", f"{scheme}://{parts.netloc}{path}")
    if scheme in ("grpc", "grpcs"):
        if port is None:
            raise ValueError(f"{VARIABLE} needs a port: {url!r}; {advice}")
        return Endpoint("grpc", f"{parts.hostname}:{port}", insecure=scheme == "grpc")
    raise ValueError(f"{VARIABLE} has an unknown scheme {scheme!r}; {advice}")


class _State:
    lock = threading.Lock()
    provider: Any = None
    tracer: trace.Tracer | None = None
    pid: int = 0


def setup(url: str, service_name: str = "certs") -> bool:
    """Start exporting spans to ``url`` from this process (once); False when ``url`` is empty."""
    endpoint = parse_endpoint(url)
    if endpoint is None:
        return False
    with _State.lock:
        if _State.tracer is not None and _State.pid == os.getpid():
            return True
        # The SDK and exporters are imported only when tracing is on: a costly import.
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=_resource(service_name))
        provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint)))
        _State.provider, _State.pid = provider, os.getpid()
        _State.tracer = provider.get_tracer("certs")
    log.info("tracing: spans exported over OTLP/%s to %s", endpoint.protocol, endpoint.url)
    return True


def _resource(service_name: str) -> Any:
    """The SDK's resource (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and the
    detectors apply) with its hash computed once: the exporter looks every span's resource up
    in a dict, and ``Resource.__hash__`` serialises all its attributes to JSON each time."""
    from opentelemetry.sdk.resources import Resource

    class HashedOnce(Resource):
        def __init__(self, attributes: Any, schema_url: str | None = None) -> None:
            super().__init__(attributes, schema_url)
            self._hash = super().__hash__()

        def __hash__(self) -> int:
            return self._hash

        def __eq__(self, other: object) -> bool:
            return self is other or super().__eq__(other)

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    made = Resource.create(attributes)
    return HashedOnce(made.attributes, made.schema_url)


def _exporter(endpoint: Endpoint) -> Any:
    if endpoint.protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )
        return HttpExporter(endpoint=endpoint.url)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    return GrpcExporter(endpoint=endpoint.url, insecure=endpoint.insecure)


def shutdown() -> None:
    """Export what is buffered and stop (at process exit)."""
    with _State.lock:
        provider, _State.provider, _State.tracer = _State.provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _State.tracer is not None


def _parent_dropped(parent: otel_context.Context | None) -> bool:
    """True when the span a new span would be the child of was not sampled: the sampler
    drops its children (parent-based, or a ratio of the same trace id), so none is started.
    (Its flag, not ``is_recording``: a span that has ended still has children to record.)"""
    found = trace.get_current_span(parent).get_span_context()
    return found.is_valid and not found.trace_flags.sampled


def _failed(started: Any, error: BaseException | None) -> None:
    # As the SDK's ``use_span``: an Exception (not a BaseException) marks the span failed.
    if isinstance(error, Exception):
        started.record_exception(error)
        started.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


class _Span:
    """A span started on entry (a child of ``parent`` or of the current span), made the
    current span inside unless it is a leaf, ended on exit."""

    __slots__ = ("_attributes", "_current", "_kind", "_name", "_parent", "_span", "_token",
                 "_tracer")

    def __init__(self, tracer: trace.Tracer, name: str, attributes: Mapping[str, Any] | None,
                 kind: trace.SpanKind, parent: otel_context.Context | None,
                 current: bool) -> None:
        self._tracer, self._name, self._attributes = tracer, name, attributes
        self._kind, self._parent, self._current = kind, parent, current
        self._span: Any = None
        self._token: object = None

    def __enter__(self) -> Any:
        started = self._tracer.start_span(self._name, context=self._parent, kind=self._kind,
                                          attributes=self._attributes)
        if self._current:
            self._token = otel_context.attach(trace.set_span_in_context(started))
        self._span = started
        return started

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        _failed(self._span, error)
        self._span.end()


def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         kind: trace.SpanKind = trace.SpanKind.INTERNAL,
         parent: otel_context.Context | None = None) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (or of ``parent``), the current span inside; a no-op
    while tracing is off."""
    tracer = _State.tracer
    if tracer is None or _parent_dropped(parent):
        return _NOTHING
    return _Span(tracer, name, attributes, kind, parent, True)


def leaf_span(name: str, attributes: Mapping[str, Any] | None = None, *,
              kind: trace.SpanKind = trace.SpanKind.INTERNAL
              ) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one that is not made current: for work that starts no span
    of its own (an HSM signature, a gRPC call whose metadata comes from ``outgoing_headers``
    of this span)."""
    tracer = _State.tracer
    if tracer is None or _parent_dropped(None):
        return _NOTHING
    return _Span(tracer, name, attributes, kind, None, False)


Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]]


class _AsgiHeaders(Getter[Sequence[tuple[bytes, bytes]]]):
    """Reads propagation headers from an ASGI header list (names are lower case)."""

    def get(self, carrier: Sequence[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.encode("latin-1")
        found = [value.decode("latin-1") for name, value in carrier if name == wanted]
        return found or None

    def keys(self, carrier: Sequence[tuple[bytes, bytes]]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier]


_ASGI_HEADERS = _AsgiHeaders()


def _caller(headers: Headers) -> otel_context.Context:
    """The caller's trace context from a header mapping or an ASGI header list."""
    if isinstance(headers, Mapping):
        return propagate.extract(headers)
    listed = headers if isinstance(headers, list | tuple) else list(headers)  # read once each
    return propagate.extract(listed, getter=_ASGI_HEADERS)


_NO_SERVER_SPAN = contextlib.nullcontext(None)


def server_span(name: str, headers: Headers,
                attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """The span of an incoming request, continuing the caller's ``traceparent``; ``headers``
    is a mapping or the ASGI scope's list of (name, value) byte pairs. It yields None while
    tracing is off."""
    tracer = _State.tracer
    if tracer is None:
        return _NO_SERVER_SPAN
    return _Span(tracer, name, attributes, trace.SpanKind.SERVER, _caller(headers), True)


def outgoing_headers(of: Any = None) -> list[tuple[str, str]] | None:
    """``traceparent`` (and ``tracestate``) of span ``of`` (default: the current span), as
    gRPC metadata."""
    if _State.tracer is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=None if of is None else trace.set_span_in_context(of))
    return list(carrier.items()) or None


def current_context() -> otel_context.Context | None:
    """The current trace context, to parent spans made later elsewhere (a batch)."""
    return otel_context.get_current() if _State.tracer is not None else None


class _Attached:
    __slots__ = ("_parent", "_token")

    def __init__(self, parent: otel_context.Context) -> None:
        self._parent = parent
        self._token: object = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(self._parent)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


def attached(parent: otel_context.Context | None) -> contextlib.AbstractContextManager[Any]:
    """Run the code inside as part of ``parent``'s trace (a request's, in a batch)."""
    if parent is None or _State.tracer is None:
        return _NOTHING
    return _Attached(parent)


def trace_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines."""
    if _State.tracer is None:
        return None
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")


def traced(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``function`` run inside a span called ``name``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with span(name):
            return function(*args, **kwargs)

    return wrapper


def trace_transactions(engine: Any) -> None:
    """A span per database transaction on a SQLAlchemy engine (BEGIN to COMMIT/ROLLBACK)."""
    if getattr(engine, "_certs_traced", False):
        return
    engine._certs_traced = True
    attributes = {"db.system": engine.dialect.name}

    def begin(conn: Any) -> None:
        tracer = _State.tracer
        if tracer is None or _parent_dropped(None):
            return
        conn.info["certs_span"] = tracer.start_span("db.transaction",
                                                    kind=trace.SpanKind.CLIENT,
                                                    attributes=attributes)

    def end(conn: Any) -> None:
        started = conn.info.pop("certs_span", None)
        if started is not None:
            started.end()

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)


def database_read_spans(system: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """Opens the same span as ``trace_transactions`` around a read made outside the engine
    (the store's reads on the event loop)."""
    attributes = {"db.system": system}
    return lambda: leaf_span("db.transaction", attributes, kind=trace.SpanKind.CLIENT)
