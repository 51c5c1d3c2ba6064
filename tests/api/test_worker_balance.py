"""The workers' shares of the open connections (api/worker_balance.py), decided from
the counts each worker publishes; the servers' side is in tests/server/test_workers.py."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfstorage.api.worker_balance import INTERVAL, WorkerLoad


@pytest.fixture
def other_worker() -> Iterator[int]:
    """A live process standing for another worker (only its pid is used)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _publish(directory: Path, pid: int, held: int) -> None:
    (directory / str(pid)).write_bytes(b"%10d\n" % held)


def test_a_worker_over_its_share_closes_one_connection_per_interval(
    tmp_path: Path, other_worker: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("tfstorage.api.worker_balance.time.monotonic", lambda: clock[0])
    load = WorkerLoad(str(tmp_path))
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
    assert (tmp_path / str(load._pid)).read_bytes().strip() == b"0"  # publish() writes it
    load.publish(3)
    assert (tmp_path / str(load._pid)).read_bytes().strip() == b"3"
    load.close()
    assert not (tmp_path / str(load._pid)).exists()


def test_a_dead_workers_count_is_dropped(tmp_path: Path) -> None:
    """A worker killed outright leaves its file: not a worker any more, nor its load."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    _publish(tmp_path, gone.pid, 0)
    load = WorkerLoad(str(tmp_path))
    assert not load.over_share(8)  # alone: all of them are its share
    assert not (tmp_path / str(gone.pid)).exists()
    load.close()
