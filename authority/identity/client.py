"""Async gRPC clients of the Mainflux things and auth services (SPEC section 4).

Both clients are meant to be created once per process (e.g. in the application's startup hook)
and shared by every request: one HTTP/2 channel multiplexes all concurrent calls. The channel is
opened lazily inside the running event loop on the first call, so a client may be constructed
before the loop starts or before a worker process forks. gRPC channels reconnect by themselves
after the server restarts; the reconnect back-off is capped (`max_reconnect_backoff`, 2 s by
default) so service resumes within about that long once the server is back.

Every call has a deadline (`timeout`, seconds). gRPC statuses become the typed errors of
`authority.identity.errors`; tokens and thing keys never appear in an error message or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, NamedTuple, Self, TypeVar

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message

from authority import metrics, tracing
from authority.protomfx import (
    CAN_USER_ACCESS_THING,
    GET_KEY_BY_THING_ID,
    IDENTIFY_THING,
    IDENTIFY_USER,
    auth_pb2,
    things_pb2,
)

from .errors import (
    AuthenticationFailed,
    AuthorizationFailed,
    IdentityError,
    IdentityUnavailable,
    InvalidIdentityRequest,
    Service,
)

__all__ = ["Action", "AuthClient", "KeyType", "ThingsClient", "UserIdentity"]

log = logging.getLogger(__name__)

Action = Literal["viewer", "editor"]
KeyType = Literal["internal", "external"]
ACTIONS: frozenset[str] = frozenset({"viewer", "editor"})
KEY_TYPES: frozenset[str] = frozenset({"internal", "external"})

ResponseT = TypeVar("ResponseT", bound=Message)
ErrorType = type[IdentityError]

# Status mapping shared by every call unless a method overrides a code. Any status not listed
# (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, UNIMPLEMENTED, ...) means the service
# cannot answer: IdentityUnavailable.
_BASE_MAPPING: dict[grpc.StatusCode, ErrorType] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationFailed,
    grpc.StatusCode.PERMISSION_DENIED: AuthorizationFailed,
    grpc.StatusCode.NOT_FOUND: AuthorizationFailed,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidIdentityRequest,
}
# Identifying a thing key (download) or a user token: an unknown credential is a failed
# authentication, not a missing entity.
_CREDENTIAL_MAPPING: dict[grpc.StatusCode, ErrorType] = {
    **_BASE_MAPPING,
    grpc.StatusCode.NOT_FOUND: AuthenticationFailed,
}

_WHAT: dict[ErrorType, str] = {
    AuthenticationFailed: "authentication failed",
    AuthorizationFailed: "authorization failed",
    InvalidIdentityRequest: "invalid request",
}

# Extra time past the gRPC deadline after which the client gives up on its own, in case the
# call does not complete at its deadline for any reason.
_GUARD_SECONDS = 1.0


class UserIdentity(NamedTuple):
    """Answer of AuthService.Identify."""

    id: str
    email: str


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """Peer-supplied text without any of `secrets`, shortened, for a log line."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:200]


class _Client:
    """Channel management and the call/error-mapping machinery shared by both clients."""

    service: ClassVar[Service]

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 1.0,
        tls: bool | None = None,
        ca_certs: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        max_reconnect_backoff: float = 2.0,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    ) -> None:
        """Describe the connection; nothing is opened until the first call.

        target: "host:port" (any gRPC target string). timeout: per-call deadline in seconds.
        tls: use TLS; None means "TLS when ca_certs is given". ca_certs: PEM file of the roots to
        trust (read now, so a bad path fails at start); with tls=True and no ca_certs the
        system roots are used. tls_server_name: expected name in the server certificate when
        it differs from the target host. max_reconnect_backoff: cap of the reconnect back-off
        in seconds. options / interceptors: passed to the grpc.aio channel as they are.
        """
        if not target:
            raise ValueError(f"{self.service} service address is empty")
        if timeout <= 0:
            raise ValueError(f"{self.service} service timeout must be positive")
        self.target = target
        self.timeout = float(timeout)
        self.tls = bool(ca_certs) if tls is None else tls
        self._root_certs: bytes | None = None
        if self.tls and ca_certs:
            self._root_certs = Path(ca_certs).read_bytes()
            if b"-----BEGIN CERTIFICATE-----" not in self._root_certs:
                raise ValueError(f"{ca_certs}: no PEM certificate found")
        backoff_ms = max(100, int(max_reconnect_backoff * 1000))
        self._options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", min(250, backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ]
        if tls_server_name:
            self._options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._options.extend(options)
        self._interceptors = list(interceptors) if interceptors else None
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callables: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}
        self._latencies: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}, timeout={self.timeout}, tls={self.tls})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open_channel(self) -> grpc.aio.Channel:
        if self.tls:
            creds = grpc.ssl_channel_credentials(root_certificates=self._root_certs)
            return grpc.aio.secure_channel(
                self.target, creds, options=self._options, interceptors=self._interceptors
            )
        return grpc.aio.insecure_channel(
            self.target, options=self._options, interceptors=self._interceptors
        )

    def _channel_for_loop(self) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            # A channel belongs to the loop it was opened in; a client reused from another loop
            # (tests, a restarted loop) gets a fresh one and the old one is left to be collected.
            self._channel = self._open_channel()
            self._loop = loop
            self._callables = {}
        return self._channel

    def _callable(self, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
        channel = self._channel_for_loop()
        fn = self._callables.get(path)
        if fn is None:
            # Responses come back as bytes and are parsed in _call, so that an undecodable
            # answer is an error of ours rather than a None from grpc.
            fn = channel.unary_unary(path, request_serializer=_serialize)
            self._callables[path] = fn
        return fn

    async def close(self) -> None:
        """Close the channel (calls in flight are cancelled). The client may be used again."""
        channel, loop = self._channel, self._loop
        self._channel, self._loop, self._callables = None, None, {}
        if channel is not None and loop is asyncio.get_running_loop():
            await channel.close()

    async def ready(self, timeout: float | None = None) -> bool:
        """Wait until the channel is connected (at most `timeout`, default the call timeout)."""
        channel = self._channel_for_loop()
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                await channel.channel_ready()
        except TimeoutError:
            return False
        return True

    def _latency(self, method: str) -> Any:
        """The latency histogram of ``method`` (``labels()`` looked up once per method)."""
        child = self._latencies.get(method)
        if child is None:
            child = metrics.IDENTITY_SECONDS.labels(service=self.service, method=method)
            self._latencies[method] = child
        return child

    def _error(
        self,
        cls: ErrorType,
        method: str,
        code: grpc.StatusCode | None,
    ) -> IdentityError:
        if cls is IdentityUnavailable:
            message = f"{self.service} service unavailable"
        else:
            message = f"{self.service} service: {_WHAT[cls]}"
        return cls(message, service=self.service, method=method, code=code)

    async def _call(
        self,
        method: str,
        path: str,
        request: Message,
        response_type: type[ResponseT],
        mapping: dict[grpc.StatusCode, ErrorType],
        secrets: Sequence[str],
    ) -> ResponseT:
        fn = self._callable(path)
        code: grpc.StatusCode | None
        started = time.perf_counter()
        with tracing.leaf_span(f"{self.service}/{method}", {"rpc.system": "grpc",
                                                           "rpc.method": method},
                               kind=tracing.SpanKind.CLIENT) as span:
            try:
                async with asyncio.timeout(self.timeout + _GUARD_SECONDS):
                    # This call's span travels to the callee as W3C traceparent metadata.
                    raw = await fn(request, timeout=self.timeout,
                                   metadata=tracing.outgoing_headers(span))
                return response_type.FromString(raw)
            except DecodeError:
                code, details = None, "undecodable response"
            except grpc.aio.AioRpcError as err:
                code = err.code()
                details = _scrub(err.details() or "", secrets)
            except (grpc.RpcError, grpc.aio.UsageError) as err:
                code, details = None, type(err).__name__
            except TimeoutError:
                code, details = grpc.StatusCode.DEADLINE_EXCEEDED, "client guard timeout"
            finally:
                self._latency(method).observe(time.perf_counter() - started)
        metrics.IDENTITY_ERRORS.labels(service=self.service, method=method,
                                       code=code.name if code is not None else "NONE").inc()
        cls = mapping.get(code, IdentityUnavailable) if code is not None else IdentityUnavailable
        level = logging.WARNING if cls is IdentityUnavailable else logging.DEBUG
        log.log(
            level,
            "%s.%s failed: %s (%s) target=%s",
            self.service,
            method,
            code.name if code is not None else "NONE",
            details,
            self.target,
        )
        # `from None`: the gRPC error may carry the peer's details; keep them off tracebacks.
        raise self._error(cls, method, code) from None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class ThingsClient(_Client):
    """Client of protomfx.ThingsService (`MF_THINGS_GRPC_URL`, `MF_THINGS_GRPC_TIMEOUT`)."""

    service: ClassVar[Service] = "things"

    async def can_access(self, token: str, thing_id: str, action: Action) -> None:
        """Return when the user holding `token` may act as `action` on the thing.

        Raises AuthenticationFailed (bad token), AuthorizationFailed (no right, or unknown
        thing), InvalidIdentityRequest, IdentityUnavailable. ValueError for a bad `action`.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be 'viewer' or 'editor', not {action!r}")
        request = things_pb2.UserAccessReq(token=token, id=thing_id, action=action)
        await self._call(
            "CanUserAccessThing",
            CAN_USER_ACCESS_THING,
            request,
            empty_pb2.Empty,
            _BASE_MAPPING,
            (token,),
        )

    async def identify_thing(self, key: str, key_type: KeyType = "internal") -> str:
        """Return the id of the thing whose key ("internal" or "external") is `key`.

        Raises AuthenticationFailed (unknown key: NOT_FOUND or UNAUTHENTICATED, or an empty
        id in the answer), AuthorizationFailed (PERMISSION_DENIED), InvalidIdentityRequest,
        IdentityUnavailable. ValueError for a bad `key_type`.
        """
        if key_type not in KEY_TYPES:
            raise ValueError(f"key_type must be 'internal' or 'external', not {key_type!r}")
        request = things_pb2.ThingKey(value=key, type=key_type)
        response = await self._call(
            "Identify", IDENTIFY_THING, request, things_pb2.ThingID, _CREDENTIAL_MAPPING, (key,)
        )
        if not response.value:
            log.warning("things.Identify answered an empty thing id target=%s", self.target)
            raise self._error(AuthenticationFailed, "Identify", None)
        return response.value

    async def thing_key(self, thing_id: str) -> str:
        """Return the key of the thing (for MF_CERTS_SUBJECT_CN=thing_key).

        Raises AuthorizationFailed (unknown thing), AuthenticationFailed, InvalidIdentityRequest,
        IdentityUnavailable (also when the answer holds an empty key).
        """
        request = things_pb2.ThingID(value=thing_id)
        response = await self._call(
            "GetKeyByThingID", GET_KEY_BY_THING_ID, request, things_pb2.ThingKey, _BASE_MAPPING, ()
        )
        if not response.value:
            log.warning("things.GetKeyByThingID answered an empty key target=%s", self.target)
            raise self._error(IdentityUnavailable, "GetKeyByThingID", None)
        return response.value


class AuthClient(_Client):
    """Client of protomfx.AuthService (`MF_AUTH_GRPC_URL`, `MF_AUTH_GRPC_TIMEOUT`)."""

    service: ClassVar[Service] = "auth"

    async def identify_user(self, token: str) -> UserIdentity:
        """Return (id, email) of the user holding `token`.

        Raises AuthenticationFailed (unknown token: UNAUTHENTICATED or NOT_FOUND, or an empty id
        in the answer), AuthorizationFailed, InvalidIdentityRequest, IdentityUnavailable.
        """
        request = auth_pb2.Token(value=token)
        response = await self._call(
            "Identify", IDENTIFY_USER, request, auth_pb2.UserIdentity, _CREDENTIAL_MAPPING, (token,)
        )
        if not response.id:
            log.warning("auth.Identify answered an empty user id target=%s", self.target)
            raise self._error(AuthenticationFailed, "Identify", None)
        return UserIdentity(response.id, response.email)
