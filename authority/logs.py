"""The log set-up of every process of the service: one JSON object per line on stderr, at
MF_CERTS_LOG_LEVEL (SPEC 11).

A record whose message is a ``Fields`` (or a string holding a JSON object, as the scheduler
writes) has its fields merged into the line; any other message becomes ``msg``. Callers never
pass credentials, PINs or keys: nothing here redacts.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# MF_CERTS_LOG_LEVEL's names (the Go service's) to the logging module's levels.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}
_RESERVED = ("time", "level", "logger")


class Fields(dict[str, Any]):
    """A structured log message; ``str()`` is its JSON, so it also reads as one."""

    def __str__(self) -> str:
        return json.dumps(self, default=str, separators=(", ", ": "))


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: time, level, logger, then the message's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = _fields(record)
        for name, value in fields.items():
            line[f"field_{name}" if name in _RESERVED else name] = value
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line["exception"] = f"{type(error).__name__}: {error}"[:500]
        return json.dumps(line, default=str)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    if isinstance(record.msg, dict) and not record.args:
        return dict(record.msg)
    message = record.getMessage()
    if message.startswith("{") and message.endswith("}"):
        try:
            parsed = json.loads(message)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"msg": message}


def level_of(level: str) -> int:
    return LEVELS.get(level.lower(), logging.ERROR)


def configure_logging(level: str) -> None:
    """Root logger: one JSON handler on stderr at ``level`` (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level_of(level))
    # Alembic announces each of its plugins at info: noise in the service's log.
    logging.getLogger("alembic").setLevel(max(level_of(level), logging.WARNING))


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's ``log_config``: its own loggers write JSON through the root handler, and its
    access log stays off (the service logs each request itself)."""
    name = logging.getLevelName(level_of(level))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "authority.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": name},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "alembic": {"level": logging.getLevelName(max(level_of(level), logging.WARNING))},
        },
    }
