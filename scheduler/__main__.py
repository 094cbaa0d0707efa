"""``python -m scheduler``: the background process (rotation, outbox relay, CRL refresh).

Configuration comes from the service's ``MF_*`` variables; the options below only tune it.
``--once`` does a single rotation run (plus CRL and one outbox drain), prints its report as
JSON and exits. ``--metrics-port`` (or ``MF_CERTS_SCHEDULER_METRICS_PORT``) serves this
process's Prometheus metrics.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import timedelta

from prometheus_client import start_http_server

from authority.durations import parse_duration
from authority.logs import configure_logging
from authority.settings import ConfigError, load_settings
from hsm.errors import HsmError
from repository import RepositoryError
from scheduler.process import Tuning, run_scheduler


def _duration(text: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r}") from None
    if value <= timedelta(0):
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scheduler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="one rotation run, then exit")
    parser.add_argument("--no-relay", action="store_true",
                        help="leave events in the outbox (another process publishes them)")
    parser.add_argument("--batch", type=_positive, default=20,
                        help="certificates claimed at a time (default 20)")
    parser.add_argument("--concurrency", type=_positive, default=2,
                        help="certificates renewed in parallel (default 2)")
    parser.add_argument("--claim-lease", type=_duration, default=timedelta(minutes=15),
                        help="how long a claim lasts if this process dies (default 15m)")
    parser.add_argument("--relay-lease", type=_duration, default=timedelta(seconds=30),
                        help="how long an outbox event is held while publishing (default 30s)")
    parser.add_argument("--relay-poll", type=_duration, default=timedelta(seconds=1),
                        help="how often the outbox is checked (default 1s)")
    parser.add_argument("--relay-backoff-max", type=_duration, default=timedelta(seconds=10),
                        help="longest wait between attempts while NATS is down (default 10s)")
    parser.add_argument("--metrics-port", type=int,
                        default=None, help="serve Prometheus metrics on this port")
    return parser


def _metrics_port(option: int | None) -> int | None:
    if option is not None:
        return option or None
    raw = os.environ.get("MF_CERTS_SCHEDULER_METRICS_PORT", "")
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError("MF_CERTS_SCHEDULER_METRICS_PORT must be a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError("MF_CERTS_SCHEDULER_METRICS_PORT must be between 0 and 65535")
    return port or None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        port = _metrics_port(args.metrics_port)
    except ConfigError as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level)
    if port is not None:
        start_http_server(port)
    tuning = Tuning(batch=args.batch, concurrency=args.concurrency, claim_lease=args.claim_lease,
                    relay_lease=args.relay_lease,
                    relay_poll=args.relay_poll.total_seconds(),
                    relay_backoff_max=args.relay_backoff_max.total_seconds(),
                    relay=not args.no_relay)
    try:
        return run_scheduler(settings, once=args.once, tuning=tuning)
    except (HsmError, RepositoryError, OSError) as exc:
        print(f"scheduler: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
