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
"""

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
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
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint)))
        _State.provider, _State.pid = provider, os.getpid()
        _State.tracer = provider.get_tracer("certs")
    log.info("tracing: spans exported over OTLP/%s to %s", endpoint.protocol, endpoint.url)
    return True


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


def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         kind: trace.SpanKind = trace.SpanKind.INTERNAL,
         parent: otel_context.Context | None = None) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (or of ``parent``); a no-op while tracing is off."""
    tracer = _State.tracer
    if tracer is None:
        return _NOTHING
    return tracer.start_as_current_span(name, context=parent, kind=kind,
                                        attributes=dict(attributes or {}))


@contextlib.contextmanager
def server_span(name: str, headers: Mapping[str, str],
                attributes: Mapping[str, Any]) -> Iterator[Any]:
    """The span of an incoming request, continuing the caller's ``traceparent``."""
    tracer = _State.tracer
    if tracer is None:
        yield None
        return
    parent = propagate.extract(headers)
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER,
                                      attributes=dict(attributes)) as current:
        yield current


def outgoing_headers() -> list[tuple[str, str]] | None:
    """``traceparent`` (and ``tracestate``) of the current span, as gRPC metadata."""
    if _State.tracer is None:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items()) or None


def current_context() -> otel_context.Context | None:
    """The current trace context, to parent spans made later elsewhere (a batch)."""
    return otel_context.get_current() if _State.tracer is not None else None


def attached(parent: otel_context.Context | None) -> contextlib.AbstractContextManager[Any]:
    """Run the code inside as part of ``parent``'s trace (a request's, in a batch)."""
    if parent is None or _State.tracer is None:
        return _NOTHING
    return _attached(parent)


@contextlib.contextmanager
def _attached(parent: otel_context.Context) -> Iterator[None]:
    token = otel_context.attach(parent)
    try:
        yield
    finally:
        otel_context.detach(token)


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
    system = engine.dialect.name

    def begin(conn: Any) -> None:
        tracer = _State.tracer
        if tracer is None:
            return
        started = tracer.start_span("db.transaction", kind=trace.SpanKind.CLIENT,
                                    attributes={"db.system": system})
        conn.info["certs_span"] = started

    def end(conn: Any) -> None:
        started = conn.info.pop("certs_span", None)
        if started is not None:
            started.end()

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)
