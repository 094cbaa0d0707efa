"""How results are shown: JSON on request, otherwise short lines for people."""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

from certs_sdk.models import Certificate, format_time


def plain(value: Any) -> Any:
    """A result as JSON-ready values (times as RFC 3339, tuples as lists)."""
    if isinstance(value, datetime):
        return format_time(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def certificate_json(cert: Certificate, *, key_written: bool) -> dict[str, Any]:
    """The record; the private key only when it was not written to a file (and exists)."""
    body = plain(cert)
    if key_written or cert.private_key is None:
        body.pop("private_key")
    return body


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def certificate_lines(cert: Certificate) -> str:
    return "\n".join((
        f"serial:      {cert.serial}",
        f"thing_id:    {cert.thing_id}",
        f"key:         {cert.private_key_type} {cert.key_bits}",
        f"expires_at:  {format_time(cert.expires_at)}",
        f"downloaded:  {'yes' if cert.downloaded else 'no'}",
    ))
