"""The log set-up of every process of the service, at MF_CERTS_LOG_LEVEL."""

import logging
import sys

# MF_CERTS_LOG_LEVEL's names (the Go service's) to the logging module's levels.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str) -> None:
    """One-line records at ``level`` on stderr."""
    logging.basicConfig(level=LEVELS.get(level, logging.ERROR), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
