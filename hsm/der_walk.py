"""Reading a few fields out of DER without building asn1crypto objects: asn1crypto's own
tag-length-value parser, walked by hand where a full load would cost more than the work."""

from asn1crypto import parser

# (class, method, tag, header, contents) of one parsed value.
Element = tuple[int, int, int, bytes, bytes]
Kind = tuple[int, int, int]

SEQUENCE: Kind = (0, 1, 16)
INTEGER: Kind = (0, 0, 2)
BIT_STRING: Kind = (0, 0, 3)
OCTET_STRING: Kind = (0, 0, 4)
NULL: Kind = (0, 0, 5)
OID: Kind = (0, 0, 6)


def explicit(number: int) -> Kind:
    """The kind of a context-specific constructed value: ``[number] EXPLICIT``."""
    return (2, 1, number)


def one(data: bytes, kind: Kind) -> bytes:
    """The contents of the single value ``data`` holds (nothing may follow it)."""
    cls, method, tag, _, contents, trailer = parser.parse(data, strict=True)
    if (cls, method, tag) != kind or trailer:
        raise ValueError("unexpected value")
    return contents


def children(contents: bytes) -> list[Element]:
    """The values one after another in ``contents`` (definite lengths only, as DER)."""
    found: list[Element] = []
    offset = 0
    while offset < len(contents):
        cls, method, tag, header, body, trailer = parser.parse(contents[offset:])
        if trailer:
            raise ValueError("indefinite length is not DER")
        found.append((cls, method, tag, header, body))
        offset += len(header) + len(body)
    return found


def expect(element: Element, kind: Kind) -> bytes:
    """The contents of ``element``, which must be of ``kind``."""
    if element[:3] != kind:
        raise ValueError("unexpected value")
    return element[4]


def encoding(element: Element) -> bytes:
    """The whole DER of ``element``: header and contents."""
    return element[3] + element[4]
