"""prometheus_client's metric classes, with its values set up once per process.

In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, as ``certs serve`` does) every increment
checks whether the process has forked by asking for its pid; that system call is most of an
increment's cost. Here the pid is asked once and again only in a forked child, so the check
stays and costs a function call. Every metrics module takes its classes from here, so the
values are set up before the first metric exists.
"""

import os

from prometheus_client import Counter, Gauge, Histogram, Summary, values

__all__ = ["Counter", "Gauge", "Histogram", "Summary"]

_pid = os.getpid()


def _process() -> int:
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)
if values.ValueClass is not values.MutexValue:
    values.ValueClass = values.MultiProcessValue(process_identifier=_process)
