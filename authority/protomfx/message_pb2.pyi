from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Message(_message.Message):
    __slots__ = ("publisher", "subtopic", "payload", "contentType", "protocol", "created")
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    SUBTOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONTENTTYPE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    publisher: str
    subtopic: str
    payload: bytes
    contentType: str
    protocol: str
    created: int
    def __init__(self, publisher: _Optional[str] = ..., subtopic: _Optional[str] = ..., payload: _Optional[bytes] = ..., contentType: _Optional[str] = ..., protocol: _Optional[str] = ..., created: _Optional[int] = ...) -> None: ...
