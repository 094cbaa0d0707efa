"""An in-process gRPC server answering the protomfx RPCs as a test tells it to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from authority.protomfx import (
    CAN_USER_ACCESS_THING,
    GET_KEY_BY_THING_ID,
    IDENTIFY_THING,
    IDENTIFY_USER,
    auth_pb2,
    things_pb2,
)

REQUEST_TYPES: dict[str, type[Message]] = {
    CAN_USER_ACCESS_THING: things_pb2.UserAccessReq,
    IDENTIFY_THING: things_pb2.ThingKey,
    GET_KEY_BY_THING_ID: things_pb2.ThingID,
    IDENTIFY_USER: auth_pb2.Token,
}

DEFAULT_REPLIES: dict[str, Message] = {
    CAN_USER_ACCESS_THING: empty_pb2.Empty(),
    IDENTIFY_THING: things_pb2.ThingID(value="thing-1"),
    GET_KEY_BY_THING_ID: things_pb2.ThingKey(value="key-1", type="internal"),
    IDENTIFY_USER: auth_pb2.UserIdentity(id="user-1", email="user@example.com"),
}


@dataclass
class Behaviour:
    """What the fake does for one method: wait `delay` s, then abort with `code` or reply."""

    code: grpc.StatusCode | None = None
    details: str = "refused"
    echo_secret: bool = False  # put the request's token/key into the status details
    reply: Message | bytes | None = None  # bytes: sent as they are
    delay: float = 0.0


def _secret_of(request: Any) -> str:
    if isinstance(request, things_pb2.UserAccessReq):
        return request.token
    if isinstance(request, things_pb2.ThingKey | auth_pb2.Token):
        return request.value
    return ""


def _serialize(reply: Message | bytes) -> bytes:
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


class FakeIdentityServer:
    def __init__(self) -> None:
        self.behaviour: dict[str, Behaviour] = {}
        self.requests: list[tuple[str, Message]] = []
        self.server: grpc.aio.Server | None = None
        self.addr = ""

    def set(self, path: str, behaviour: Behaviour) -> None:
        self.behaviour[path] = behaviour

    def reset(self) -> None:
        self.behaviour.clear()
        self.requests.clear()

    def _handler(self, path: str) -> grpc.RpcMethodHandler:
        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message | bytes:
            self.requests.append((path, request))
            b = self.behaviour.get(path, Behaviour())
            if b.delay:
                await asyncio.sleep(b.delay)
            if b.code is not None:
                details = b.details
                if b.echo_secret:
                    details = f"{details}: {_secret_of(request)}"
                await context.abort(b.code, details)
            return b.reply if b.reply is not None else DEFAULT_REPLIES[path]

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=REQUEST_TYPES[path].FromString,
            response_serializer=_serialize,
        )

    async def start(self) -> None:
        handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for path in REQUEST_TYPES:
            _, service, method = path.split("/")
            handlers.setdefault(service, {})[method] = self._handler(path)
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers(
            tuple(grpc.method_handlers_generic_handler(s, m) for s, m in handlers.items())
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{port}"
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
