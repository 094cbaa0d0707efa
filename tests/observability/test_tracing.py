"""Tracing (SPEC 11): spans of a real ``certs serve`` received over OTLP/HTTP by a real
receiver, continuing the caller's traceparent; gRPC calls carry it to the callee; the Jaeger
agent form of MF_JAEGER_URL is refused at start."""

import asyncio
import secrets
import subprocess
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import httpx
from google.protobuf import empty_pb2

from authority import tracing
from authority.identity import ThingsClient
from authority.protomfx import things_pb2
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port
from tests.fixtures.serve import ROOT, operator_env, serve_env, start_serve, stop_serve
from tests.observability.otlp_receiver import ReceivedSpan, otlp_receiver

SERVER, CLIENT = 2, 3  # SpanKind values in the OTLP protobuf


def wait_for(receiver, trace_id: str, names: set[str], timeout: float = 30
             ) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.of_trace(trace_id)
        if names <= {span.name for span in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def test_spans_continue_the_callers_trace(tmp_path: Path, identity: IdentityFixture) -> None:
    with otlp_receiver() as receiver:
        env = serve_env(tmp_path, identity, workers=1, extra={
            "MF_JAEGER_URL": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
        served = start_serve(env, tmp_path)
        trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
        headers = {"Authorization": f"Bearer {identity.alice.token}",
                   "traceparent": f"00-{trace_id}-{caller}-01"}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
                issued = client.post("/certs", headers=headers, json={
                    "thing_id": identity.thing_a1.id, "key_type": "ec", "ttl": "2h"})
                assert issued.status_code == 201, issued.text
                revoked = client.delete(f"/certs/{issued.json()['serial']}", headers=headers)
                assert revoked.status_code == 200, revoked.text
                wanted = {"POST /certs", "DELETE /certs/{serial}", "things/CanUserAccessThing",
                          "auth/Identify", "hsm.sign", "db.transaction", "crl.publish"}
                spans = wait_for(receiver, trace_id, wanted)
        finally:
            stop_serve(served.process)

    names = {span.name for span in spans}
    assert wanted <= names, names
    servers = [span for span in spans if span.kind == SERVER]
    assert {span.name for span in servers} == {"POST /certs", "DELETE /certs/{serial}"}
    assert all(span.parent_span_id == caller for span in servers)
    assert all(span.service == "certs" for span in spans)
    issue = next(span for span in servers if span.name == "POST /certs")
    assert issue.attributes["http.route"] == "/certs"
    assert issue.attributes["http.response.status_code"] == 201
    by_id = {span.span_id: span for span in spans}

    def root_of(span: ReceivedSpan) -> ReceivedSpan:
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
        return span

    calls = [span for span in spans if span.name == "things/CanUserAccessThing"]
    assert {span.parent_span_id for span in calls} == {s.span_id for s in servers}
    assert all(span.kind == CLIENT for span in calls)
    for name in ("hsm.sign", "db.transaction", "crl.publish"):
        assert all(root_of(span) in servers for span in spans if span.name == name), name
    signed = [span for span in spans if span.name == "hsm.sign"]
    assert {root_of(span).name for span in signed} == {"POST /certs", "DELETE /certs/{serial}"}


async def _call_with_trace(receiver_url: str) -> tuple[list[tuple[str, str]], str]:
    seen: list[tuple[str, str]] = []

    async def can_access(request: things_pb2.UserAccessReq,
                         context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        seen.extend((key, value) for key, value in context.invocation_metadata())
        return empty_pb2.Empty()

    handler = grpc.method_handlers_generic_handler("protomfx.ThingsService", {
        "CanUserAccessThing": grpc.unary_unary_rpc_method_handler(
            can_access, request_deserializer=things_pb2.UserAccessReq.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    assert tracing.setup(receiver_url, service_name="certs-test")
    try:
        async with ThingsClient(f"127.0.0.1:{port}", timeout=5) as things:
            with tracing.span("caller") as span:
                await things.can_access("token", "thing", "viewer")
                trace_id = format(span.get_span_context().trace_id, "032x")
    finally:
        tracing.shutdown()
        await server.stop(None)
    return seen, trace_id


def test_grpc_calls_carry_the_traceparent_to_the_callee() -> None:
    with otlp_receiver() as receiver:
        metadata, trace_id = asyncio.run(_call_with_trace(receiver.url))
        spans = wait_for(receiver, trace_id, {"caller", "things/CanUserAccessThing"}, 10)
    parents = [value for key, value in metadata if key == "traceparent"]
    assert len(parents) == 1 and parents[0].split("-")[1] == trace_id, metadata
    call = next(span for span in spans if span.name == "things/CanUserAccessThing")
    assert parents[0].split("-")[2] == call.span_id  # the callee's parent is the client span


def test_the_jaeger_agent_form_is_refused_at_start(tmp_path: Path) -> None:
    env = {**operator_env(tmp_path / "state"), "MF_JAEGER_URL": "localhost:6831"}
    result = subprocess.run([sys.executable, "-m", "server.cli", "serve"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MF_JAEGER_URL" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
