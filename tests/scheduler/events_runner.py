"""A platform-event consumer as a real process, for the tests that kill it or run two.

    python -m tests.scheduler.events_runner [--claim-idle S] [--claim-interval S]
                                            [--pause {before,after}] [--pause-at N]

Configuration from the service's ``MF_*`` variables (store, HSM, CRL path) and
``MF_CERTS_ES_URL``. It logs one JSON line per event to stderr. With ``--pause before`` it
prints ``PAUSED <entry count so far>`` and hangs just before the N-th revocation transaction;
with ``--pause after`` just after it committed (before the CRL and the acknowledgement), so
a test can SIGKILL it there.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence

from authority.crl_publisher import CrlPublisher
from authority.settings import load_settings
from authority.wiring import open_authority
from repository import Revocation, Store, create_engine_for
from scheduler.platform_events import PlatformEvents


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--claim-idle", type=float, default=1.0)
    parser.add_argument("--claim-interval", type=float, default=0.5)
    parser.add_argument("--pause", choices=("before", "after"))
    parser.add_argument("--pause-at", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    settings = load_settings()
    authority = open_authority(settings)
    store = Store(create_engine_for(settings.db_url, pool_size=2), authority.sealer)
    crl = CrlPublisher(authority, store, settings.crl_path, settings.crl_validity)
    calls = 0

    def revoke(things: Sequence[str]) -> list[Revocation]:
        nonlocal calls
        calls += 1
        paused = args.pause is not None and calls == args.pause_at
        if paused and args.pause == "before":
            _hang()
        revocations = store.revoke_things(things)
        if paused and args.pause == "after":
            _hang()
        return revocations

    consumer = PlatformEvents(os.environ["MF_CERTS_ES_URL"], revoke_things=revoke,
                              cover_crl=crl.ensure_covers, claim_idle=args.claim_idle,
                              claim_interval=args.claim_interval, block=0.5)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        print(f"CONSUMER {consumer.consumer}", flush=True)
        await consumer.run(stop)

    asyncio.run(run())
    store.engine.dispose()
    return 0


def _hang() -> None:
    print("PAUSED", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
