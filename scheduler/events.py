"""The rotation event as it goes out on NATS (SPEC section 9).

Subject ``things.<thing_id>.commands.cert-rotation``. Body: a protobuf ``protomfx.Message``
envelope (Mainflux's message format) whose ``payload`` is the JSON ``CertEvent``:

- ``publisher``: the thing id (the event is about, and for, that thing);
- ``subtopic``: ``"cert-rotation"``, the last token of the subject, so a consumer that only
  sees the envelope (e.g. after a bridge) can still tell what kind of command it is;
- ``contentType``: ``"application/json"``; ``protocol``: ``"certs"``;
- ``created``: Unix time in nanoseconds when the event was made (in the rotation transaction,
  not when it was published).

The JSON carries the new private key: it waits in the outbox sealed by the HSM like every
stored key, and is never logged.
"""

import json
import re
import time
from dataclasses import asdict, dataclass, field

from authority.protomfx import message_pb2

SUBTOPIC = "cert-rotation"
CONTENT_TYPE = "application/json"
PROTOCOL = "certs"

# A NATS subject token: printable, no separator, wildcard or white space.
_TOKEN = re.compile(r"[^\s.*>]+")


def rotation_subject(thing_id: str) -> str:
    """The subject a thing's rotation events are published on; ValueError when the thing id
    cannot be a single subject token (it would publish elsewhere or be refused)."""
    if not _TOKEN.fullmatch(thing_id):
        raise ValueError("thing id is not usable as a NATS subject token")
    return f"things.{thing_id}.commands.{SUBTOPIC}"


@dataclass(frozen=True)
class CertEvent:
    """The new certificate of a rotation, as the device receives it."""

    thing_id: str
    client_cert: str
    client_key: str = field(repr=False)
    issuing_ca: str
    ca_chain: list[str]
    serial: str
    expires_at: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "CertEvent":
        fields = json.loads(data)
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


def envelope(event: CertEvent, created_ns: int | None = None) -> bytes:
    """The serialized ``protomfx.Message`` carrying ``event``."""
    message = message_pb2.Message(
        publisher=event.thing_id,
        subtopic=SUBTOPIC,
        payload=event.to_json(),
        contentType=CONTENT_TYPE,
        protocol=PROTOCOL,
        created=created_ns if created_ns is not None else time.time_ns(),
    )
    data: bytes = message.SerializeToString()
    return data
