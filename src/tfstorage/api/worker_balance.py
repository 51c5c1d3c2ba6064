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
all of them (their total over the live workers, rounded up) answers a request with
`Connection: close`, looking at most once every `INTERVAL`: the client sends its next
request on a new connection, which the kernel places afresh, until no worker holds more
than its share. Closing a persistent connection after a complete response is allowed at
any time (RFC 9112, 9.6) and every HTTP/1.1 client handles it; it costs that client one
new connection, and only while the load is uneven. Only a request whose body has all
arrived when its response starts is answered so: closing with unread bytes in the socket
sends a reset, which can lose the response on its way (RFC 9112, 9.6 again).

A worker counts from the moment its app is built, a moment before it listens: while a
new worker starts, the others may close a few connections that come back to them.
Balancing is an optimisation: a worker that cannot take part serves on without it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import time
from typing import Any

log = logging.getLogger(__name__)
_clock = time.monotonic

WORKER_LOAD_DIR_ENV = "TFSTORAGE_WORKER_LOAD_DIR"
INTERVAL = 0.2  # seconds between two looks at the load: time for a client to reconnect


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
        if held != self._held and self._fd >= 0:
            self._held = held
            with contextlib.suppress(OSError):  # a full disk: the others read a stale count
                os.pwrite(self._fd, b"%10d\n" % held, 0)

    def due(self) -> bool:
        """Whether it is time to look at the load again (cheap: once per request)."""
        return _clock() >= self._next_check

    def over_share(self, held: int) -> bool:
        """Whether this worker, holding `held` connections, should close one now."""
        now = _clock()
        if held < 2 or now < self._next_check:
            return False
        self._next_check = now + INTERVAL
        try:
            others, workers = self._others()
        except OSError:  # the directory is gone (the parent is shutting down)
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
        fd, self._fd = self._fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)
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
        try:
            _load = WorkerLoad(directory)
        except OSError as exc:  # the directory was removed (a /tmp cleaner), say
            log.warning("worker %d serves without connection balancing: %s", os.getpid(), exc)
            return
        atexit.register(_load.close)


def connections_changed(held: int) -> None:
    if _load is not None:
        _load.publish(held)


class BalancedConnections:
    """For uvicorn's HTTP protocols (api/header_deadline.py): publish the connection
    count, and answer one request of an over-share worker with `Connection: close`."""

    connections: Any  # the worker's open connections (a set in uvicorn's server state)
    cycle: Any
    _balanced_cycle: Any = None

    def _connections_changed(self) -> None:
        connections_changed(len(self.connections))

    def _balance(self) -> None:
        """Once per request, when its cycle exists and before its response starts: when
        a look at the load is due, the decision is taken as the response starts."""
        cycle = self.cycle
        if cycle is None or cycle is self._balanced_cycle:
            return
        self._balanced_cycle = cycle
        if _load is None or not _load.due() or _closes_anyway(cycle):
            return
        send = cycle.send
        connections = self.connections

        async def send_balanced(message: Any) -> None:
            if (
                message["type"] == "http.response.start"
                and not cycle.more_body  # the request's body has all arrived
                and _over_share(len(connections))
            ):
                # uvicorn's protocols close the connection after a response saying so.
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
                log.debug("closing a connection after this response: over this worker's share")
            await send(message)

        # The app is handed `cycle.send` when its task starts, on a later loop turn.
        cycle.send = send_balanced


def _over_share(held: int) -> bool:
    try:
        return _load is not None and _load.over_share(held)
    except Exception:  # never fail a response over an optimisation
        log.exception("connection balancing failed")
        return False


def _closes_anyway(cycle: Any) -> bool:
    """HTTP/1.0, or the client asked to close: no connection to hand back."""
    if not getattr(cycle, "keep_alive", True) or cycle.scope.get("http_version") != "1.1":
        return True
    headers = cycle.scope["headers"]
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)
