"""What the current request did, for its log line, its audit record and its metrics.

The HTTP middleware opens a context per request (``begin``); the use cases fill in the actor,
the thing and the serials they touched; the middleware reads it back when the response is sent.
It is a context variable: each request (asyncio task) sees its own. Blocking work that runs in
a thread pool does not see it, so the use cases read it on the event loop and pass what they
need along.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

OPERATOR = "operator"
SCHEDULER = "scheduler"
EVENT = "event"
UNIDENTIFIED_USER = "user:unidentified"


def user_actor(user_id: str) -> str:
    return f"user:{user_id}"


def thing_actor(thing_id: str) -> str:
    return f"thing:{thing_id}"


@dataclass
class RequestContext:
    """One request's facts; never a credential."""

    request_id: str
    client: str | None = None
    actor: str | None = None
    email: str | None = None
    thing_id: str | None = None
    serials: list[str] = field(default_factory=list)
    operation: str | None = None  # the Go service's method name, e.g. issue_cert
    reason: str | None = None  # the error message answered, if any

    def touched(self, *serials: str) -> None:
        for serial in serials:
            if serial and serial not in self.serials:
                self.serials.append(serial)


_current: ContextVar[RequestContext | None] = ContextVar("certs_request", default=None)


def current() -> RequestContext | None:
    """The context of the request being handled, None outside a request."""
    return _current.get()


@contextmanager
def request_scope(context: RequestContext) -> Iterator[RequestContext]:
    """Make ``context`` the current one for the code run inside."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def note(*, actor: str | None = None, email: str | None = None, thing_id: str | None = None,
         serials: tuple[str, ...] = ()) -> None:
    """Record facts about the current request (nothing happens outside a request)."""
    context = _current.get()
    if context is None:
        return
    if actor is not None:
        context.actor = actor
    if email is not None:
        context.email = email
    if thing_id is not None:
        context.thing_id = thing_id
    context.touched(*serials)
