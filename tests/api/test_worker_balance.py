"""The workers' shares of the open connections (api/worker_balance.py), decided from
the counts each worker publishes; the servers' side is in tests/server/test_workers.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tfstorage.api import worker_balance
from tfstorage.api.worker_balance import INTERVAL, BalancedConnections, WorkerLoad


@pytest.fixture
def other_worker() -> Iterator[int]:
    """A live process standing for another worker (only its pid is used)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(worker_balance, "_clock", lambda: now[0])
    return now


@pytest.fixture
def load(tmp_path: Path) -> Iterator[WorkerLoad]:
    this = WorkerLoad(str(tmp_path))
    yield this
    this.close()


def _publish(directory: Path, pid: int, held: int) -> None:
    (directory / str(pid)).write_bytes(b"%10d\n" % held)


def test_a_worker_over_its_share_closes_one_connection_per_interval(
    tmp_path: Path, other_worker: int, clock: list[float], load: WorkerLoad
) -> None:
    _publish(tmp_path, other_worker, 2)
    assert load.over_share(6)  # 8 over 2 workers: 4 each
    assert not load.over_share(6)  # not again before the client has reconnected
    clock[0] += INTERVAL  # the client reconnected, and the kernel placed it there
    _publish(tmp_path, other_worker, 3)
    assert load.over_share(5)
    clock[0] += INTERVAL
    _publish(tmp_path, other_worker, 4)
    assert not load.over_share(4)
    clock[0] += INTERVAL
    assert not load.over_share(5)  # 9: the share rounds up to 5
    clock[0] += INTERVAL
    _publish(tmp_path, other_worker, 5)
    assert not load.over_share(1)
    mine = tmp_path / str(load._pid)
    assert mine.read_bytes().strip() == b"0"  # from the start, before any connection
    load.publish(3)
    assert mine.read_bytes().strip() == b"3"
    load.close()
    assert not mine.exists()
    load.publish(4)  # after close: written nowhere (its fd number may be another file's)
    assert not mine.exists()


def test_a_dead_workers_count_is_dropped(tmp_path: Path, load: WorkerLoad) -> None:
    """A worker killed outright leaves its file: not a worker any more, nor its load."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    _publish(tmp_path, gone.pid, 0)
    assert not load.over_share(8)  # alone: all of them are its share
    assert not (tmp_path / str(gone.pid)).exists()


class _Protocol(BalancedConnections):
    def __init__(self, cycle: Any, held: int) -> None:
        self.cycle = cycle
        self.connections = set(range(held))


def _cycle(*, more_body: bool, version: str = "1.1", headers: list[Any] | None = None) -> Any:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"http_version": version, "headers": headers or []}
    return SimpleNamespace(send=send, sent=sent, more_body=more_body, keep_alive=True, scope=scope)


async def _answer(protocol: _Protocol) -> list[tuple[bytes, bytes]]:
    protocol._balance()
    cycle = protocol.cycle
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    headers: list[tuple[bytes, bytes]] = cycle.sent[0]["headers"]
    return headers


CLOSE = (b"connection", b"close")


@pytest.mark.anyio
async def test_the_response_to_a_whole_request_says_close_when_over_share(
    tmp_path: Path,
    other_worker: int,
    clock: list[float],
    load: WorkerLoad,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_balance, "_load", load)
    _publish(tmp_path, other_worker, 2)
    # The body still coming when the answer starts (a 4xx before reading it): closing
    # would reset the connection under the answer. Not closed, and the look not spent.
    cycle = _cycle(more_body=True)
    assert CLOSE not in await _answer(_Protocol(cycle, held=6))
    # HTTP/1.0 or `Connection: close` from the client: closes anyway, nothing to hand back.
    assert CLOSE not in await _answer(_Protocol(_cycle(more_body=False, version="1.0"), 6))
    closing = _cycle(more_body=False, headers=[(b"connection", b"Close")])
    assert CLOSE not in await _answer(_Protocol(closing, 6))
    assert CLOSE in await _answer(_Protocol(_cycle(more_body=False), held=6))
    # Looked at once per INTERVAL: the next request, at once, is kept.
    assert CLOSE not in await _answer(_Protocol(_cycle(more_body=False), held=6))
    clock[0] += INTERVAL
    _publish(tmp_path, other_worker, 4)
    assert CLOSE not in await _answer(_Protocol(_cycle(more_body=False), held=4))  # even


def test_a_worker_that_cannot_join_serves_without_balancing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_balance, "_load", None)
    monkeypatch.setenv(worker_balance.WORKER_LOAD_DIR_ENV, str(tmp_path / "removed"))
    worker_balance.join_from_environment()  # no exception: the worker starts
    assert worker_balance._load is None
    protocol = _Protocol(_cycle(more_body=False), held=6)
    protocol._balance()
    worker_balance.connections_changed(6)
