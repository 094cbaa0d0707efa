"""Static identity provider: a small gRPC server standing in for Mainflux things and auth.

NOT FOR MULTI-USER PRODUCTION. It answers the four RPCs the certs service uses (SPEC section 4)
from a JSON file of users with fixed bearer tokens, things with fixed keys, and grants (format in
`devtools.identity.directory`). Tokens never expire, nothing is audited, there is no user or thing
management. It exists for the embedded single-operator default, demos and tests; a real
deployment points the certs service at Mainflux's own things and auth services.

Answers:

- ThingsService.CanUserAccessThing(UserAccessReq{token, id, action}) -> Empty:
  unknown or empty token UNAUTHENTICATED; empty id or action not "viewer"/"editor"
  INVALID_ARGUMENT; unknown thing NOT_FOUND; not allowed PERMISSION_DENIED. The owner of a thing
  is an editor; an editor is also a viewer.
- ThingsService.Identify(ThingKey{value, type}) -> ThingID: type not "internal"/"external"
  INVALID_ARGUMENT; unknown key NOT_FOUND.
- ThingsService.GetKeyByThingID(ThingID) -> ThingKey{key, "internal"}: unknown thing NOT_FOUND.
- AuthService.Identify(Token) -> UserIdentity{id, email}: unknown token UNAUTHENTICATED.

Both services are served on every listening address (the things and the auth address may be the
same). Status details never echo a token or key.

Command line:

    python3 -m devtools.identity.provider --file identity.json \
        [--things-addr 127.0.0.1:8183] [--auth-addr 127.0.0.1:8181] \
        [--tls-cert server.pem --tls-key server.key] [--demo] [--log-level info]

`--demo` first writes a demo identity file at --file when none exists. Once listening it prints
one line to stdout:

    identity provider ready: things=HOST:PORT auth=HOST:PORT users=N things=M

SIGTERM/SIGINT stop it (exit 0); SIGHUP reloads the file (an invalid file keeps the old content).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message

from authority.files import write_atomically
from authority.protomfx import AUTH_SERVICE, THINGS_SERVICE, auth_pb2, things_pb2
from devtools.identity.directory import Directory, IdentityFileError, load_identity_file

__all__ = [
    "DemoIdentity",
    "DemoThing",
    "IdentityStore",
    "RunningProvider",
    "ServerTLS",
    "main",
    "start_provider",
    "write_demo_file",
]

log = logging.getLogger(__name__)

DEFAULT_THINGS_ADDR = "127.0.0.1:8183"
DEFAULT_AUTH_ADDR = "127.0.0.1:8181"
READY_PREFIX = "identity provider ready:"

_ACTIONS = frozenset({"viewer", "editor"})
_EMPTY = empty_pb2.Empty()


class IdentityStore:
    """The current directory, replaceable at run time (SIGHUP reload)."""

    def __init__(self, source: Directory | str | os.PathLike[str]) -> None:
        if isinstance(source, Directory):
            self.path: Path | None = None
            self.directory = source
        else:
            self.path = Path(source)
            self.directory = load_identity_file(self.path)

    def reload(self) -> bool:
        """Re-read the file; on error keep the current directory and return False."""
        if self.path is None:
            return False
        try:
            self.directory = load_identity_file(self.path)
        except IdentityFileError as err:
            log.error("identity file not reloaded: %s", err)
            return False
        log.info(
            "identity file reloaded: %d users, %d things",
            len(self.directory.users),
            len(self.directory.things),
        )
        return True


class _Reject(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


# The handlers proper: plain functions of (request, directory), raising _Reject for a status.


def _can_user_access_thing(req: things_pb2.UserAccessReq, d: Directory) -> empty_pb2.Empty:
    user = d.user_by_token(req.token)
    if user is None:
        raise _Reject(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token")
    if req.action not in _ACTIONS:
        raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "action must be viewer or editor")
    if not req.id:
        raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "missing thing id")
    if req.id not in d.things:
        raise _Reject(grpc.StatusCode.NOT_FOUND, "thing not found")
    if not d.allowed(user.id, req.id, req.action):
        raise _Reject(grpc.StatusCode.PERMISSION_DENIED, "not allowed")
    return _EMPTY


def _identify_thing(req: things_pb2.ThingKey, d: Directory) -> things_pb2.ThingID:
    if req.type == "internal":
        thing_id = d.thing_by_key(req.value)
    elif req.type == "external":
        thing_id = d.thing_by_key(req.value, external=True)
    else:
        raise _Reject(grpc.StatusCode.INVALID_ARGUMENT, "key type must be internal or external")
    if thing_id is None:
        raise _Reject(grpc.StatusCode.NOT_FOUND, "thing not found")
    return things_pb2.ThingID(value=thing_id)


def _get_key_by_thing_id(req: things_pb2.ThingID, d: Directory) -> things_pb2.ThingKey:
    thing = d.things.get(req.value)
    if thing is None:
        raise _Reject(grpc.StatusCode.NOT_FOUND, "thing not found")
    return things_pb2.ThingKey(value=thing.key, type="internal")


def _identify_user(req: auth_pb2.Token, d: Directory) -> auth_pb2.UserIdentity:
    user = d.user_by_token(req.value)
    if user is None:
        raise _Reject(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid token")
    return auth_pb2.UserIdentity(id=user.id, email=user.email)


def _method(
    store: IdentityStore,
    fn: Callable[[Any, Directory], Message],
    request_type: type[Message],
) -> grpc.RpcMethodHandler:
    parse = request_type.FromString

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            return fn(parse(request), store.directory)
        except _Reject as r:
            await context.abort(r.code, r.details)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
        raise AssertionError("not reached: abort raises")

    # The request is parsed in the handler (no request_deserializer) so that a malformed one
    # gets INVALID_ARGUMENT instead of grpc's generic failure and its server-side traceback.
    return grpc.unary_unary_rpc_method_handler(handler, response_serializer=_serialize)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def generic_handlers(store: IdentityStore) -> tuple[grpc.GenericRpcHandler, ...]:
    """The gRPC handlers of protomfx.ThingsService and protomfx.AuthService over `store`."""
    things = grpc.method_handlers_generic_handler(
        THINGS_SERVICE,
        {
            "CanUserAccessThing": _method(store, _can_user_access_thing, things_pb2.UserAccessReq),
            "Identify": _method(store, _identify_thing, things_pb2.ThingKey),
            "GetKeyByThingID": _method(store, _get_key_by_thing_id, things_pb2.ThingID),
        },
    )
    auth = grpc.method_handlers_generic_handler(
        AUTH_SERVICE, {"Identify": _method(store, _identify_user, auth_pb2.Token)}
    )
    return things, auth


@dataclass(frozen=True)
class ServerTLS:
    """PEM certificate (chain) and private key of the provider's TLS listener."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @classmethod
    def from_files(cls, cert: str | os.PathLike[str], key: str | os.PathLike[str]) -> ServerTLS:
        return cls(Path(cert).read_bytes(), Path(key).read_bytes())


@dataclass
class RunningProvider:
    """A started provider; `things_addr`/`auth_addr` carry the bound ports."""

    server: grpc.aio.Server
    store: IdentityStore
    things_addr: str
    auth_addr: str

    async def stop(self, grace: float | None = 1.0) -> None:
        await self.server.stop(grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _with_port(addr: str, port: int) -> str:
    host, _, _ = addr.rpartition(":")
    return f"{host}:{port}"


async def start_provider(
    source: Directory | str | os.PathLike[str] | IdentityStore,
    things_addr: str = DEFAULT_THINGS_ADDR,
    auth_addr: str = DEFAULT_AUTH_ADDR,
    tls: ServerTLS | None = None,
) -> RunningProvider:
    """Start the provider in the running event loop.

    Port 0 picks a free port (see the returned addresses). Raises RuntimeError when an address
    cannot be bound, IdentityFileError for a bad file.
    """
    store = source if isinstance(source, IdentityStore) else IdentityStore(source)
    # so_reuseport=0: a second provider on the same port must fail, not share the traffic.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(generic_handlers(store))
    creds = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)]) if tls else None
    bound: dict[str, str] = {}
    for addr in dict.fromkeys((things_addr, auth_addr)):
        if ":" not in addr:
            raise ValueError(f"listen address {addr!r} has no port")
        try:
            port = server.add_secure_port(addr, creds) if creds else server.add_insecure_port(addr)
        except RuntimeError:
            port = 0
        if not port:
            raise RuntimeError(f"cannot listen on {addr}")
        bound[addr] = _with_port(addr, port)
    await server.start()
    return RunningProvider(server, store, bound[things_addr], bound[auth_addr])


# --- demo identity ------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoThing:
    id: str
    name: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class DemoIdentity:
    """What write_demo_file wrote: one user owning a few things."""

    path: Path
    user_id: str
    email: str
    token: str = field(repr=False)
    things: tuple[DemoThing, ...] = ()


def write_demo_file(path: str | os.PathLike[str], things: int = 3) -> DemoIdentity:
    """Write (replace) a demo identity file, mode 0600, and return its content.

    One user "demo@example.com" with a random token, owner of `things` things with random keys.
    """
    target = Path(path)
    user_id = str(uuid.uuid4())
    token = secrets.token_urlsafe(32)
    demo_things = tuple(
        DemoThing(id=str(uuid.uuid4()), name=f"demo-thing-{i}", key=str(uuid.uuid4()))
        for i in range(1, things + 1)
    )
    data = {
        "users": [{"id": user_id, "email": "demo@example.com", "token": token}],
        "things": [
            {"id": t.id, "name": t.name, "key": t.key, "owner": user_id} for t in demo_things
        ],
        "grants": [],
    }
    write_atomically(target, json.dumps(data, indent=2) + "\n", mode=0o600)
    return DemoIdentity(target, user_id, "demo@example.com", token, demo_things)


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m devtools.identity.provider",
        description="Static identity provider (Mainflux things and auth gRPC services) for "
        "demos and tests. Not for multi-user production.",
    )
    p.add_argument("--file", required=True, help="identity JSON file (users, things, grants)")
    p.add_argument("--things-addr", default=DEFAULT_THINGS_ADDR, help="host:port (%(default)s)")
    p.add_argument("--auth-addr", default=DEFAULT_AUTH_ADDR, help="host:port (%(default)s)")
    p.add_argument("--tls-cert", help="PEM certificate: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument(
        "--demo", action="store_true", help="write a demo identity file at --file if missing"
    )
    p.add_argument("--log-level", default="info", help="logging level (%(default)s)")
    return p


async def _serve(args: argparse.Namespace) -> int:
    tls = ServerTLS.from_files(args.tls_cert, args.tls_key) if args.tls_cert else None
    running = await start_provider(args.file, args.things_addr, args.auth_addr, tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.store.reload)
    # Ready only once the signal handlers are in place, so a stop right after it is clean.
    d = running.store.directory
    print(
        f"{READY_PREFIX} things={running.things_addr} auth={running.auth_addr} "
        f"users={len(d.users)} things={len(d.things)}",
        flush=True,
    )
    await stop.wait()
    await running.stop(grace=1.0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    if args.demo and not Path(args.file).exists():
        demo = write_demo_file(args.file)
        print(
            f"wrote demo identity to {demo.path} (user {demo.email}; its token and the thing "
            "keys are in the file)",
            flush=True,
        )
    try:
        return asyncio.run(_serve(args))
    except (IdentityFileError, OSError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
