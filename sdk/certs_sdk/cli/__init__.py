"""`certs-client`: the SDK as a command line. Exit codes say what failed (EXIT_* below)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from certs_sdk._transport import DEFAULT_TIMEOUT, DEFAULT_URL
from certs_sdk.cli.commands import (
    Unhealthy,
    UsageError,
    check_usage,
    run,
    token,
    write,
)
from certs_sdk.cli.parser import build_parser
from certs_sdk.client import CertsClient
from certs_sdk.errors import (
    BadRequest,
    CertsError,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from certs_sdk.retry import RetryEvent, RetryPolicy

EXIT_OK = 0
EXIT_OTHER = 1
EXIT_USAGE = 2
EXIT_BAD_REQUEST = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_UNAVAILABLE = 6

_EXITS: tuple[tuple[type[CertsError], int], ...] = (
    (BadRequest, EXIT_BAD_REQUEST),
    (UnsupportedMediaType, EXIT_BAD_REQUEST),
    (Unauthorized, EXIT_AUTH),
    (Forbidden, EXIT_AUTH),
    (NotFound, EXIT_NOT_FOUND),
    (ServiceUnavailable, EXIT_UNAVAILABLE),
)


def exit_code(error: CertsError) -> int:
    for cls, code in _EXITS:
        if isinstance(error, cls):
            return code
    return EXIT_OTHER


def _fail(args: argparse.Namespace, message: str, status: int | None, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "status": status, "exit": code}), file=sys.stderr)
    else:
        prefix = f"{status} " if status is not None else ""
        print(f"certs-client: {prefix}{message}", file=sys.stderr)
    return code


def _retrying(event: RetryEvent) -> None:
    print(f"certs-client: {event.reason}; retrying in {event.delay:.1f} s", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    environ = dict(os.environ)
    try:
        user_token = token(args, environ)
        check_usage(args, user_token)
        client = CertsClient(
            getattr(args, "url", None) or environ.get("CERTS_URL") or DEFAULT_URL, user_token,
            timeout=getattr(args, "timeout", DEFAULT_TIMEOUT),
            retry=RetryPolicy(attempts=max(1, getattr(args, "retries", 4))),
            verify=getattr(args, "cacert", True), on_retry=_retrying)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        return _fail(args, str(exc), None, EXIT_USAGE)
    try:
        with client:
            result = run(args, client, environ)
    except Unhealthy as exc:
        write(exc.report)
        return EXIT_UNAVAILABLE
    except UsageError as exc:
        return _fail(args, str(exc), None, EXIT_USAGE)
    except CertsError as exc:
        return _fail(args, exc.message, exc.status, exit_code(exc))
    except OSError as exc:
        return _fail(args, f"cannot write: {exc.strerror or exc}", None, EXIT_OTHER)
    write(result)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
