"""Refusing to serve on a port another process already serves on.

The HTTP workers of one service share the port with ``SO_REUSEPORT``, and Linux lets any other
``SO_REUSEPORT`` socket of the same user join them: a second service would then get half of the
connections. Two checks keep the port to one service:

- the lock: a service holds an exclusive ``flock`` on ``certs-http-<host>-<port>.lock`` in the
  temporary directory for as long as it runs, so a second service started on the same machine,
  even at the same moment, finds it taken;
- the probe: a plain socket (``SO_REUSEADDR`` only, so connections in TIME_WAIT do not count) is
  bound to the address and closed again. Linux refuses that bind while any socket listens on the
  port, with ``SO_REUSEPORT`` or not, whichever process or user it belongs to. A socket bound
  with ``SO_REUSEADDR`` but not listening does not conflict, so the service's own workers bind
  and listen afterwards as before.
"""

import errno
import fcntl
import ipaddress
import os
import socket
import tempfile
from pathlib import Path

PORT_VARIABLE = "MF_CERTS_HTTP_PORT"


class PortInUse(Exception):
    """The port is served by another process, or cannot be used at all."""


def address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def claim_port(host: str, port: int) -> int | None:
    """Take the port for this process; returns the lock's descriptor (kept open for the life of
    the process; None when the lock file cannot be opened, e.g. another user's). PortInUse with
    a one-line message naming MF_CERTS_HTTP_PORT otherwise."""
    lock = _lock(host, port)
    try:
        probe_free(host, port)
    except PortInUse:
        if lock is not None:
            os.close(lock)
        raise
    return lock


def probe_free(host: str, port: int) -> None:
    """PortInUse when something listens on `host`:`port` (or on a wider address over it)."""
    with socket.socket(address_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(f"port {port} ({PORT_VARIABLE}) on {host} is already in use by "
                                "another process") from None
            raise PortInUse(f"cannot listen on {host} port {port} ({PORT_VARIABLE}, "
                            f"MF_CERTS_HTTP_HOST): {exc.strerror}") from None


def _lock(host: str, port: int) -> int | None:
    path = Path(tempfile.gettempdir()) / f"certs-http-{host.replace(':', '_')}-{port}.lock"
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        return None  # the probe alone decides
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise PortInUse(f"port {port} ({PORT_VARIABLE}) on {host} is already taken by another "
                        "certs service on this machine") from None
    return descriptor
