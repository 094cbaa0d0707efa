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
generator-based ones, no span is started under a parent that was not sampled (the
sampler would drop it), and ``server_span`` reads the ``traceparent`` straight from the ASGI
header list.

A leaf span (``leaf_span``: an HSM signature, an identity call, a database transaction; three of
an issuance's four spans) is not made current, since nothing inside it can be its child. Under a
sampled parent it skips the SDK's span object, whose start and end cost about 50 µs: it is
handed to the span processor at its end as the SDK's own ``ReadableSpan``, the form the
exporter reads, with the ids, flags and trace state the SDK would give a child of that parent.
That holds for the SDK's samplers (each samples the child of a sampled parent); with any
other sampler, and for a leaf without a parent, the SDK starts the span.
"""

import contextlib
import logging
import os
import threading
import time
import traceback
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


TRACER_NAME = "certs"


@dataclass(frozen=True)
class _LeafSink:
    """What a leaf span takes from the provider: its span processor, span ids, resource and
    instrumentation scope (the tracer's)."""
    processor: Any
    new_span_id: Callable[[], int]
    resource: Any
    scope: Any


class _State:
    lock = threading.Lock()
    provider: Any = None
    tracer: trace.Tracer | None = None
    leaves: _LeafSink | None = None
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
        processor = BatchSpanProcessor(_exporter(endpoint))
        provider.add_span_processor(processor)
        _State.provider, _State.pid = provider, os.getpid()
        _State.tracer = provider.get_tracer(TRACER_NAME)
        _State.leaves = _leaf_sink(provider, processor)
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


def _leaf_sink(provider: Any, processor: Any) -> _LeafSink | None:
    """Where leaf spans go, None when the sampler is not one of the SDK's (it decides every
    span then)."""
    from opentelemetry.sdk.trace.sampling import ParentBased, StaticSampler, TraceIdRatioBased
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    if not isinstance(provider.sampler, ParentBased | StaticSampler | TraceIdRatioBased):
        return None
    # BatchSpanProcessor.on_start does nothing, so a leaf is given to it at its end alone.
    return _LeafSink(processor, provider.id_generator.generate_span_id, provider.resource,
                     InstrumentationScope(TRACER_NAME, ""))


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
        _State.leaves = None
    if provider is not None:
        provider.shutdown()


def flush() -> None:
    """Export what is buffered, waiting until it is sent."""
    provider = _State.provider
    if provider is not None:
        provider.force_flush()


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
        started.set_status(_error_status(error))


def _error_status(error: Exception) -> Status:
    return Status(StatusCode.ERROR, f"{type(error).__name__}: {error}")


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


_UNSET = Status(StatusCode.UNSET)


def _exception_event(error: BaseException, at: int) -> Any:
    """The ``exception`` event the SDK's ``record_exception`` records."""
    from opentelemetry.sdk.trace import Event

    kind = type(error)
    module = kind.__module__
    return Event("exception", {
        "exception.type": (f"{module}.{kind.__qualname__}" if module and module != "builtins"
                           else kind.__qualname__),
        "exception.message": str(error),
        "exception.stacktrace": "".join(traceback.format_exception(error)),
        "exception.escaped": "False"}, timestamp=at)


class _Leaf:
    """A leaf span under a sampled parent: it yields a span that carries its ids (for
    ``outgoing_headers``) and records nothing itself; at its end the SDK's ``ReadableSpan`` of
    it goes to the span processor."""

    __slots__ = ("_attributes", "_context", "_kind", "_name", "_parent", "_sink", "_started")

    def __init__(self, sink: _LeafSink, parent: trace.SpanContext, name: str,
                 attributes: Mapping[str, Any] | None, kind: trace.SpanKind) -> None:
        self._sink, self._parent, self._name = sink, parent, name
        self._attributes, self._kind = attributes, kind
        self._context: trace.SpanContext | None = None
        self._started = 0

    def __enter__(self) -> trace.Span:
        parent = self._parent
        self._context = trace.SpanContext(parent.trace_id, self._sink.new_span_id(),
                                          is_remote=False, trace_flags=parent.trace_flags,
                                          trace_state=parent.trace_state)
        self._started = time.time_ns()
        return trace.NonRecordingSpan(self._context)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        from opentelemetry.sdk.trace import ReadableSpan

        ended = time.time_ns()
        status: Status = _UNSET
        events: tuple[Any, ...] = ()
        if isinstance(error, Exception):
            status = _error_status(error)
            events = (_exception_event(error, ended),)
        sink = self._sink
        sink.processor.on_end(ReadableSpan(
            self._name, self._context, self._parent, sink.resource, self._attributes, events,
            kind=self._kind, status=status, start_time=self._started, end_time=ended,
            instrumentation_scope=sink.scope))


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
    of this span). Its attributes are given here: the span it yields may take no more."""
    tracer = _State.tracer
    if tracer is None:
        return _NOTHING
    parent = trace.get_current_span().get_span_context()
    if parent.is_valid:
        if not parent.trace_flags.sampled:
            return _NOTHING
        if _State.leaves is not None:
            return _Leaf(_State.leaves, parent, name, attributes, kind)
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
        transaction = leaf_span("db.transaction", attributes, kind=trace.SpanKind.CLIENT)
        if transaction is not _NOTHING:
            transaction.__enter__()
            conn.info["certs_span"] = transaction

    def end(conn: Any) -> None:
        transaction = conn.info.pop("certs_span", None)
        if transaction is not None:
            transaction.__exit__(None, None, None)

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)


def database_read_spans(system: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """Opens the same span as ``trace_transactions`` around a read made outside the engine
    (the store's reads on the event loop)."""
    attributes = {"db.system": system}
    return lambda: leaf_span("db.transaction", attributes, kind=trace.SpanKind.CLIENT)
