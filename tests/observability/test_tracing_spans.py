"""The span helpers of authority.tracing in one process, exported over OTLP/HTTP to a real
receiver: parents and trace ids as the SDK records them, the traceparent read from an ASGI
header list, spans that are not made current, failures marked, database transactions, and no
span under a parent that is not recorded."""

import asyncio
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy

from authority import tracing
from repository import NotFound, Store, create_engine_for, migrate
from tests.observability.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.repository.helpers import SoftwareSealer

SERVER, CLIENT = 2, 3  # SpanKind values in the OTLP protobuf
ERROR = 2  # Status.StatusCode


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)  # parent-based, always on
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    with otlp_receiver() as found:
        assert tracing.setup(found.url, service_name="certs-test")
        try:
            yield found
        finally:
            tracing.shutdown()  # exports what is left


def by_name(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def test_spans_of_a_request_continue_the_asgi_traceparent(receiver) -> None:
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    headers = [(b"host", b"127.0.0.1"), (b"traceparent", f"00-{trace_id}-{caller}-01".encode())]
    with tracing.server_span("POST /certs", headers, {"http.route": "/certs"}) as server:
        server.set_attribute("http.response.status_code", 201)
        server_ids = tracing.trace_ids()
        with tracing.span("inner"):
            inner_ids = tracing.trace_ids()
        with tracing.leaf_span("things/CanUserAccessThing", {"rpc.system": "grpc"},
                               kind=tracing.SpanKind.CLIENT) as call:
            leaf_ids = tracing.trace_ids()  # a leaf is not the current span
            assert not call.is_recording()  # a stand-in: the span is recorded when it ends
            metadata = dict(tracing.outgoing_headers(call) or [])
        current_metadata = dict(tracing.outgoing_headers() or [])
        later = tracing.current_context()
    with tracing.attached(later), tracing.leaf_span("hsm.sign"):
        attached_ids = tracing.trace_ids()
    tracing.shutdown()

    spans = by_name(receiver.of_trace(trace_id))
    assert set(spans) == {"POST /certs", "inner", "things/CanUserAccessThing", "hsm.sign"}
    root = spans["POST /certs"]
    assert (root.kind, root.parent_span_id, root.service) == (SERVER, caller, "certs-test")
    assert {(span.service, span.scope) for span in spans.values()} == {("certs-test", "certs")}
    assert root.attributes == {"http.route": "/certs", "http.response.status_code": 201}
    for name in ("inner", "things/CanUserAccessThing", "hsm.sign"):
        assert spans[name].parent_span_id == root.span_id, name
    assert spans["things/CanUserAccessThing"].kind == CLIENT
    assert server_ids == leaf_ids == attached_ids == (trace_id, root.span_id)
    assert inner_ids == (trace_id, spans["inner"].span_id)
    call = spans["things/CanUserAccessThing"]
    assert metadata["traceparent"] == f"00-{trace_id}-{call.span_id}-01"
    assert current_metadata["traceparent"] == f"00-{trace_id}-{root.span_id}-01"
    assert tracing.trace_ids() is None  # after shutdown


def test_a_mapping_of_headers_works_too(receiver) -> None:
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    with tracing.server_span("GET /ca", {"traceparent": f"00-{trace_id}-{caller}-01"}, {}):
        pass
    tracing.shutdown()
    (span,) = receiver.of_trace(trace_id)
    assert (span.name, span.parent_span_id) == ("GET /ca", caller)


def test_a_failure_inside_a_span_marks_it_and_its_parent(receiver) -> None:
    with pytest.raises(ValueError), tracing.span("outer") as outer:
        trace_id = format(outer.get_span_context().trace_id, "032x")
        with tracing.leaf_span("hsm.sign"):
            raise ValueError("no session")
    tracing.shutdown()
    spans = by_name(receiver.of_trace(trace_id))
    assert spans["hsm.sign"].status == spans["outer"].status == ERROR
    assert spans["hsm.sign"].events == spans["outer"].events == ("exception",)


def test_a_database_transaction_is_a_span_of_the_current_one(receiver) -> None:
    engine = sqlalchemy.create_engine("sqlite://")
    tracing.trace_transactions(engine)
    tracing.trace_transactions(engine)  # once per engine
    with tracing.span("rotation.run") as run:
        trace_id = format(run.get_span_context().trace_id, "032x")
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("select 1"))
    tracing.shutdown()
    spans = by_name(receiver.of_trace(trace_id))
    assert set(spans) == {"rotation.run", "db.transaction"}
    transaction = spans["db.transaction"]
    assert transaction.parent_span_id == spans["rotation.run"].span_id
    assert (transaction.kind, transaction.attributes) == (CLIENT, {"db.system": "sqlite"})


def test_a_read_on_the_event_loop_is_a_database_span_too(receiver, postgres_url) -> None:
    migrate(postgres_url)
    store = Store(create_engine_for(postgres_url), SoftwareSealer())
    store.observe_reads(tracing.database_read_spans(store.engine.dialect.name))

    async def view_and_list() -> str:
        with tracing.span("GET /certs/{id}") as request:
            with pytest.raises(NotFound):
                await store.get_async("abcdef")
            assert (await store.list_by_thing_async("thing-1")).total == 0
        await store.close_reads()
        return format(request.get_span_context().trace_id, "032x")

    trace_id = asyncio.run(view_and_list())
    tracing.shutdown()
    store.engine.dispose()
    spans = receiver.of_trace(trace_id)
    (request,) = [span for span in spans if span.name == "GET /certs/{id}"]
    reads = [span for span in spans if span.name == "db.transaction"]
    assert len(reads) == 2 and len(spans) == 3
    for read in reads:
        assert read.parent_span_id == request.span_id
        assert (read.kind, read.attributes) == (CLIENT, {"db.system": "postgresql"})


def test_nothing_is_recorded_under_a_caller_that_did_not_sample(receiver) -> None:
    engine = sqlalchemy.create_engine("sqlite://")
    tracing.trace_transactions(engine)
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    headers = [(b"traceparent", f"00-{trace_id}-{caller}-00".encode())]
    with tracing.server_span("POST /certs", headers, {}) as server:
        assert not server.is_recording()
        with tracing.span("inner"), tracing.leaf_span("hsm.sign"), engine.begin():
            pass
        # The callee still learns the trace and that it is not sampled.
        metadata = dict(tracing.outgoing_headers() or [])
    with tracing.span("sampled") as sampled:
        sampled_trace = format(sampled.get_span_context().trace_id, "032x")
    tracing.shutdown()
    assert receiver.of_trace(trace_id) == []
    assert metadata["traceparent"].startswith(f"00-{trace_id}-")
    assert metadata["traceparent"].endswith("-00")
    assert [span.name for span in receiver.of_trace(sampled_trace)] == ["sampled"]


def test_everything_is_a_no_op_while_tracing_is_off() -> None:
    assert not tracing.enabled()
    with tracing.server_span("GET /ca", [], {}) as server, tracing.span("a"), \
            tracing.leaf_span("b"), tracing.attached(tracing.current_context()):
        assert server is None
        assert tracing.outgoing_headers() is None and tracing.trace_ids() is None


class _OwnSampler:
    """A sampler of the operator's own (not one of the SDK's): it decides every span."""

    def should_sample(self, *args: object, **kwargs: object) -> object:
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        return ALWAYS_ON.should_sample(*args, **kwargs)  # type: ignore[arg-type]

    def get_description(self) -> str:
        return "own"


def test_leaf_spans_under_a_sampler_of_ones_own_are_started_by_the_sdk(receiver,
                                                                       monkeypatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    assert tracing._leaf_sink(TracerProvider(sampler=_OwnSampler()), object()) is None
    assert tracing._leaf_sink(TracerProvider(), object()) is not None  # parent-based: its own
    monkeypatch.setattr(tracing._State, "leaves", None)  # as setup leaves it for _OwnSampler
    with tracing.span("outer") as outer:
        trace_id = format(outer.get_span_context().trace_id, "032x")
        with tracing.leaf_span("hsm.sign", {"key": "ec"}) as leaf:
            assert leaf.is_recording()  # the SDK's span, not the leaf's stand-in
    tracing.shutdown()
    spans = by_name(receiver.of_trace(trace_id))
    assert spans["hsm.sign"].parent_span_id == spans["outer"].span_id
    assert spans["hsm.sign"].attributes == {"key": "ec"}
