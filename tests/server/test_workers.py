"""``certs serve`` with several workers: each has its own listening socket on the port, so the
kernel spreads connections over them; a worker that dies is replaced; SIGTERM stops them all."""

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve

WORKERS = 2


@pytest.fixture
def served(tmp_path: Path, identity: IdentityFixture) -> Iterator[Served]:
    served = start_serve(serve_env(tmp_path, identity, workers=WORKERS), tmp_path)
    try:
        yield served
    finally:
        stop_serve(served.process)


def _children(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


def _workers(served: Served) -> set[int]:
    """The HTTP workers: the children of the serving process that hold a socket on the port."""
    return {pid for pid in _children(served.process.pid) if _port_sockets(pid, served.port)}


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes  # it exited meanwhile
    for fd in fds:
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def _tcp_sockets(port: int) -> dict[int, str]:
    """inode -> state ('0A' listening, '01' established) of the IPv4 TCP sockets bound locally
    to `port`."""
    sockets = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port:
            sockets[int(fields[9])] = fields[3]
    return sockets


def _port_sockets(pid: int, port: int) -> dict[int, str]:
    on_port = _tcp_sockets(port)
    return {inode: on_port[inode] for inode in _socket_inodes(pid) if inode in on_port}


def _wait_for_workers(served: Served, count: int, *, gone: int | None = None,
                      timeout: float = 60) -> set[int]:
    """The workers, once there are `count` of them and `gone` (a killed one) is not among them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = _workers(served)
        if len(workers) == count and gone not in workers:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"expected {count} workers, found {_workers(served)}: "
                         f"{served.output()[-2000:]}")


def test_each_worker_listens_on_its_own_socket_and_gets_connections(served: Served) -> None:
    workers = _wait_for_workers(served, WORKERS)
    listening = {pid: {i for i, state in _port_sockets(pid, served.port).items() if state == "0A"}
                 for pid in workers}
    assert all(len(inodes) == 1 for inodes in listening.values())
    assert len(set().union(*listening.values())) == WORKERS  # not one shared socket

    connections = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(32)]
    try:
        deadline = time.monotonic() + 20
        while True:  # until the workers have accepted them all
            accepted = {pid: sum(state == "01"
                                 for state in _port_sockets(pid, served.port).values())
                        for pid in workers}
            if sum(accepted.values()) == len(connections) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # 32 connections land on one socket of two with probability 2**-31.
        assert all(count > 0 for count in accepted.values()), accepted
        assert sum(accepted.values()) == len(connections)
    finally:
        for connection in connections:
            connection.close()


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(served: Served) -> None:
    workers = _wait_for_workers(served, WORKERS)
    victim = min(workers)
    victim_sockets = set(_port_sockets(victim, served.port))
    os.kill(victim, signal.SIGKILL)
    # A zombie leader can still have threads exiting with its descriptors open, so the test
    # waits for the sockets themselves to close: a connection queued on a closing listener
    # is reset by the kernel, whatever the service does.
    deadline = time.monotonic() + 10
    while victim_sockets & set(_tcp_sockets(served.port)):
        assert time.monotonic() < deadline, "the killed worker's sockets did not close"
        time.sleep(0.01)
    # Before its replacement listens (the restart waits a second), the kernel must send
    # every new connection to the worker that is left: none may hang on the dead one's socket.
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=10) as client:
        for _ in range(20):
            assert client.get("/health", headers={"Connection": "close"}).status_code == 200
    replaced = _wait_for_workers(served, WORKERS, gone=victim)
    assert len(replaced & workers) == WORKERS - 1
    assert "exited with -9; restarting in 1 s" in served.output()
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=10) as client:
        for _ in range(20):  # fresh connections, so both sockets are tried
            assert client.get("/health", headers={"Connection": "close"}).status_code == 200


def test_sigterm_stops_the_workers_and_frees_the_port(served: Served) -> None:
    workers = _wait_for_workers(served, WORKERS)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=40) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or \
            "zombie" in Path(f"/proc/{pid}/status").read_text()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", served.port)) != 0
