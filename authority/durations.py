"""Go-style durations ("8760h", "1h30m", "90s", "1.5h") as used by Mainflux configuration, and
times as the API writes them."""

import re
from datetime import UTC, datetime, timedelta

_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0,  # not Go's, but SPEC 10 accepts 30d
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """A Go ``time.ParseDuration`` string (also with a ``d`` unit); ValueError for anything
    else, OverflowError for a duration no timedelta holds."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("+", "-") else text
    if body == "0":
        return timedelta(0)
    position = 0
    seconds = 0.0
    while position < len(body):
        match = _PART.match(body, position)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return timedelta(seconds=sign * seconds)


def parse_ttl(text: str) -> timedelta:
    """A certificate lifetime: a Go duration or a whole number of hours."""
    text = text.strip()
    if text.isdigit():
        return timedelta(hours=int(text))
    return parse_duration(text)


def rfc3339(moment: datetime) -> str:
    """UTC, second precision, as the HTTP API and the rotation events write times."""
    at = moment.astimezone(UTC)
    # Formatted by hand: strftime costs several times as much, once per listed certificate.
    return (f"{at.year:04d}-{at.month:02d}-{at.day:02d}"
            f"T{at.hour:02d}:{at.minute:02d}:{at.second:02d}Z")
