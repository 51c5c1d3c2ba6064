"""SQLite's group committer (index/group_commit.py): a write that comes alone runs in a
transaction of its own with no SAVEPOINT round trips, and its failure still leaves
nothing behind; writes that come together still fail one by one."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import event

from tfstorage.errors import QuotaExceeded
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.group_commit import GroupCommitter
from tfstorage.index.writes import commit_version as index_commit

from .builders import new_version, refcounts

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def index(tmp_path: Path) -> ObjectIndex:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    index = ObjectIndex(engine)
    index.create_bucket("one", quota_objects=1)
    return index


def statements(index: ObjectIndex, write: object) -> list[str]:
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    event.listen(index.engine, "before_cursor_execute", record)
    try:
        assert callable(write)
        write()
    finally:
        event.remove(index.engine, "before_cursor_execute", record)
    return sent


def test_a_write_alone_has_no_savepoint(index: ObjectIndex) -> None:
    sent = statements(index, lambda: index.commit_version(new_version("one", "a", b"a")))
    assert "SAVEPOINT" not in sent and "RELEASE" not in sent, sent
    assert index.resolve_latest("one", "a").size == 1


def test_a_failed_write_alone_leaves_nothing(index: ObjectIndex) -> None:
    index.commit_version(new_version("one", "a", b"a"))
    before = refcounts(index)
    # The quota is judged after the blob row is taken: that row must be rolled back.
    with pytest.raises(QuotaExceeded):
        index.commit_version(new_version("one", "b", b"b"))
    assert refcounts(index) == before
    index.commit_version(new_version("one", "a", b"again"))  # the committer still works
    assert index.resolve_latest("one", "a").size == 5


def test_writes_that_come_together_fail_one_by_one(index: ObjectIndex) -> None:
    committer = GroupCommitter(index.engine)
    start, errors = threading.Barrier(8), list[QuotaExceeded]()
    results: dict[int, object] = {}

    def write(i: int) -> None:
        start.wait()
        try:
            results[i] = committer.run(
                lambda conn: index_commit(conn, new_version("one", f"k{i}", f"{i}".encode()))
            )
        except QuotaExceeded as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1 and len(errors) == 7  # a quota of one object
    assert len(refcounts(index)) == 1


HOLD_THE_TURN = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(600)
"""


def test_processes_take_turns_and_a_dead_one_gives_its_turn_up(
    index: ObjectIndex, tmp_path: Path
) -> None:
    """Worker processes' leaders take turns on a lock file beside the database (SQLite's
    own busy handler polls with sleeps of up to 100 ms): a write waits while another
    process holds the turn, and goes on as soon as that process dies, even by SIGKILL."""
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_TURN, f"{tmp_path / 'index.db'}-writers.lock"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "holding\n"
        done = threading.Event()

        def write() -> None:
            index.commit_version(new_version("one", "a", b"a"))
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.5), "the write did not wait for the other process's turn"
        other.kill()
        assert done.wait(10), "the write still waits after the holder died"
        writer.join()
    finally:
        other.kill()
        other.wait()
    assert index.resolve_latest("one", "a").size == 1
