"""Keep-alive connections spread evenly over the WORKERS processes.

With WORKERS>1 each worker listens on a socket of its own (SO_REUSEPORT, server.bind),
and the kernel places each new connection by a hash of its addresses: as coins fall.
8 keep-alive connections from one client (boto3's pool, obstore's, the SDK's, a load
balancer's) land 4/4 on two workers only 27% of the time and 6/2 or worse 29% of the
time, and then the busier worker caps the whole pool while the other idles
(bench/README.md, stop 21: 4 KiB PUTs at 575/s with the loops 0.78 / 0.38 busy, 774
and 906/s in runs where they were evenly loaded).

Each worker writes how many connections it holds to a file of its own in a directory
the parent process made (WORKER_LOAD_DIR_ENV). A worker holding more than its share of
all of them (their total over the live workers, rounded up) answers the next request it
gets with `Connection: close`, at most one every `INTERVAL`: the client sends its next
request on a new connection, which the kernel places afresh, until no worker holds more
than its share. Closing a persistent connection after a complete response is allowed at
any time (RFC 9112, 9.6) and every HTTP/1.1 client handles it; it costs that client one
new connection, and only while the load is uneven.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from typing import Any

WORKER_LOAD_DIR_ENV = "TFSTORAGE_WORKER_LOAD_DIR"
INTERVAL = 0.2  # seconds between two connections closed by one worker: time to reconnect


class WorkerLoad:
    """This worker's entry in the shared directory, and its reading of the others'."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._pid = os.getpid()
        self._path = os.path.join(directory, str(self._pid))
        # Written in place (one small pwrite), never renamed: readers see a number.
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held = -1
        self._next_check = 0.0
        self.publish(0)  # counted as a worker from the start, idle or not

    def publish(self, held: int) -> None:
        if held != self._held:
            self._held = held
            with contextlib.suppress(OSError):  # the parent is gone, shutting down
                os.pwrite(self._fd, b"%10d\n" % held, 0)

    def over_share(self, held: int) -> bool:
        """Whether this worker, holding `held` connections, should close one now."""
        now = time.monotonic()
        if held < 2 or now < self._next_check:
            return False
        self._next_check = now + INTERVAL
        try:
            others, workers = self._others()
        except OSError:  # the directory is gone: the parent is shutting down
            return False
        if workers < 2:
            return False
        share = -(-(held + others) // workers)
        return held > share

    def _others(self) -> tuple[int, int]:
        """(connections held by the other live workers, live workers including this one)."""
        held, workers = 0, 1
        for name in os.listdir(self._directory):
            if not name.isdigit() or int(name) == self._pid:
                continue
            path = os.path.join(self._directory, name)
            if not _alive(int(name)):
                # A worker killed outright (its replacement has a file of its own).
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            try:
                with open(path, "rb") as f:
                    held += int(f.read(16) or 0)
            except (OSError, ValueError):
                continue
            workers += 1
        return held, workers

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(OSError):
            os.unlink(self._path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not one of the workers
        return False
    return True


_load: WorkerLoad | None = None


def join_from_environment() -> None:
    """In a worker process, at start-up: take part when the parent asked for it."""
    global _load
    directory = os.environ.get(WORKER_LOAD_DIR_ENV)
    if directory and _load is None:
        _load = WorkerLoad(directory)
        atexit.register(_load.close)


def connections_changed(held: int) -> None:
    if _load is not None:
        _load.publish(held)


def should_close(held: int) -> bool:
    return _load is not None and _load.over_share(held)


class BalancedConnections:
    """For uvicorn's HTTP protocols (api/header_deadline.py): publish the connection
    count, and answer one request of an over-share worker with `Connection: close`."""

    connections: Any  # the worker's open connections (a set in uvicorn's server state)
    cycle: Any
    _balanced_cycle: Any = None

    def _connections_changed(self) -> None:
        connections_changed(len(self.connections))

    def _balance(self) -> None:
        """Once per request, when its cycle exists and before its response starts."""
        cycle = self.cycle
        if cycle is None or cycle is self._balanced_cycle:
            return
        self._balanced_cycle = cycle
        if should_close(len(self.connections)):
            # uvicorn's protocols close the connection after a response saying so.
            cycle.default_headers = [*cycle.default_headers, (b"connection", b"close")]
