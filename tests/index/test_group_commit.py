"""SQLite's group committer (index/group_commit.py): a write that comes alone runs in a
transaction of its own with no SAVEPOINT round trips, and its failure still leaves
nothing behind; writes that come together still fail one by one."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from tfstorage.domain.records import CommitResult
from tfstorage.errors import NoSuchKey, QuotaExceeded, ServiceUnavailable
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.driver import DriverQuery
from tfstorage.index.engine import sqlite_wal_syncer
from tfstorage.index.group_commit import GroupCommitter, _WriterTurns
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


def commit_async(index: ObjectIndex, bucket: str, key: str) -> Awaitable[list[CommitResult]]:
    return index.commit_versions_async([new_version(bucket, key, key.encode())])


def test_writes_from_an_event_loop_commit_on_its_thread_in_one_batch(index: ObjectIndex) -> None:
    """No worker thread (whose statements would compete with the loop for the GIL):
    the writes of one loop iteration run on the loop's thread, in one transaction."""
    index.create_bucket("many")
    threads: set[int] = set()
    begins: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        threads.add(threading.get_ident())
        if statement.startswith(("BEGIN", "SAVEPOINT")):
            begins.append(statement.split()[0])

    async def main() -> tuple[int, list[list[CommitResult]]]:
        results = await asyncio.gather(*(commit_async(index, "many", f"k{i}") for i in range(8)))
        return threading.get_ident(), results

    event.listen(index.engine, "before_cursor_execute", record)
    try:
        loop_thread, results = asyncio.run(main())
    finally:
        event.remove(index.engine, "before_cursor_execute", record)
    assert threads == {loop_thread}
    # One transaction (its SAVEPOINT around the batch goes on the sqlite3 connection,
    # below SQLAlchemy; one per write only on a failure).
    assert begins == ["BEGIN"], begins
    assert sorted(r[0].version.key for r in results) == [f"k{i}" for i in range(8)]
    assert {index.resolve_latest("many", f"k{i}").size for i in range(8)} == {2}


def test_a_loop_write_is_answered_after_the_wal_fsync(
    index: ObjectIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncer = sqlite_wal_syncer(index.engine)
    assert syncer is not None
    real_sync, syncing, release = syncer.sync, threading.Event(), threading.Event()

    def slow_sync() -> None:
        syncing.set()
        assert release.wait(10)
        real_sync()

    monkeypatch.setattr(syncer, "sync", slow_sync)

    async def main() -> None:
        write = asyncio.ensure_future(commit_async(index, "one", "a"))
        while not syncing.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert not write.done(), "answered before the fsync"
        release.set()
        assert (await write)[0].version.key == "a"

    asyncio.run(main())


def test_loop_writes_that_come_together_fail_one_by_one(index: ObjectIndex) -> None:
    async def main() -> list[Any]:
        writes = (commit_async(index, "one", f"k{i}") for i in range(8))
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert sum(isinstance(o, QuotaExceeded) for o in outcomes) == 7  # a quota of one object
    assert len(refcounts(index)) == 1


async def _ticks_while(write: Awaitable[Any], seconds: float) -> tuple[int, asyncio.Task[Any]]:
    """How often a 10 ms ticker ran on the loop during `seconds` of `write` waiting."""
    task = asyncio.ensure_future(write)
    ticks, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        ticks += 1
    assert not task.done(), "the write did not wait for the lock"
    return ticks, task


def test_a_lock_held_outside_the_committers_is_awaited_off_the_loop(
    index: ObjectIndex, tmp_path: Path
) -> None:
    """A writer that is no group committer (a raw connection here; GC or a migration
    in life) holds SQLite's write lock: the loop write waits for it in a thread (the
    loop keeps serving), and commits once it is free."""
    other = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def main() -> None:
        ticks, task = await _ticks_while(commit_async(index, "one", "a"), 0.5)
        assert ticks >= 10, f"the loop was blocked ({ticks} ticks in 0.5 s)"
        other.execute("ROLLBACK")
        assert (await asyncio.wait_for(task, 10))[0].version.key == "a"

    asyncio.run(main())
    other.close()


def test_a_cancelled_loop_writer_leaves_the_committer_working(index: ObjectIndex) -> None:
    index.create_bucket("many")

    async def main() -> None:
        first = asyncio.ensure_future(commit_async(index, "many", "gone"))
        await asyncio.sleep(0)  # queued
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert (await commit_async(index, "many", "next"))[0].version.key == "next"

    asyncio.run(main())
    # The cancelled caller's write went through whole or not at all; here it had
    # already been queued, and the batch it was in committed.
    assert index.resolve_latest("many", "gone").size == 4


HOLD_THE_TURN = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture
def other_process_turn(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the writers' turn on the database until killed."""
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_TURN, f"{tmp_path / 'index.db'}-writers.lock"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "holding\n"
        yield other
    finally:
        other.kill()
        other.wait()


def test_processes_take_turns_and_a_dead_one_gives_its_turn_up(
    index: ObjectIndex, other_process_turn: subprocess.Popen[str]
) -> None:
    """Worker processes' leaders take turns on a lock file beside the database (SQLite's
    own busy handler polls with sleeps of up to 100 ms): a write waits while another
    process holds the turn, and goes on as soon as that process dies, even by SIGKILL."""
    done = threading.Event()

    def write() -> None:
        index.commit_version(new_version("one", "a", b"a"))
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.5), "the write did not wait for the other process's turn"
    other_process_turn.kill()
    assert done.wait(10), "the write still waits after the holder died"
    writer.join()
    assert index.resolve_latest("one", "a").size == 1


def test_a_loop_write_awaits_another_process_turn_off_the_loop(
    index: ObjectIndex, other_process_turn: subprocess.Popen[str]
) -> None:
    async def main() -> None:
        ticks, task = await _ticks_while(commit_async(index, "one", "a"), 0.5)
        assert ticks >= 10, f"the loop was blocked ({ticks} ticks in 0.5 s)"
        other_process_turn.kill()
        assert (await asyncio.wait_for(task, 10))[0].version.key == "a"

    asyncio.run(main())


@pytest.fixture
def bucket_many(index: ObjectIndex) -> str:
    index.create_bucket("many")  # before another process takes the turn (a fixture after)
    return "many"


def test_loop_writes_queued_while_another_process_has_the_turn_join_the_waiting_batch(
    index: ObjectIndex, bucket_many: str, other_process_turn: subprocess.Popen[str]
) -> None:
    """WORKERS=N: the writes a loop queues while another process holds the turn commit
    with the one already waiting for it (one transaction, one turn, one WAL fsync),
    not in a batch of their own after it: that halved the batches with two workers."""
    begins: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    async def main() -> list[list[CommitResult]]:
        _, first = await _ticks_while(commit_async(index, bucket_many, "k0"), 0.3)
        rest = [
            asyncio.ensure_future(commit_async(index, bucket_many, f"k{i}")) for i in range(1, 5)
        ]
        await asyncio.sleep(0.1)
        assert not any(task.done() for task in rest), "a write did not wait for the turn"
        other_process_turn.kill()
        return await asyncio.wait_for(asyncio.gather(first, *rest), 10)

    event.listen(index.engine, "before_cursor_execute", record)
    try:
        results = asyncio.run(main())
    finally:
        event.remove(index.engine, "before_cursor_execute", record)
    assert len(begins) == 1, begins
    assert [r[0].version.key for r in results] == [f"k{i}" for i in range(5)]


def test_a_turn_that_cannot_be_taken_fails_its_batch_and_frees_the_lead(
    index: ObjectIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock file cannot be locked (ENOLCK, say): the writes of that batch fail,
    nothing of them is written, and later writes, from the loop or a thread, go on."""
    real, calls = _WriterTurns.try_take, [0]

    def fails_once(turns: _WriterTurns) -> bool:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(errno.ENOLCK, "No locks available")
        return real(turns)

    monkeypatch.setattr(_WriterTurns, "try_take", fails_once)

    async def main() -> None:
        with pytest.raises(OSError):
            await commit_async(index, "one", "a")
        assert (await asyncio.wait_for(commit_async(index, "one", "b"), 10))[0].version.key == "b"

    asyncio.run(main())
    assert calls[0] == 2
    with pytest.raises(NoSuchKey):
        index.resolve_latest("one", "a")
    index.delete_key("one", "b")  # a threaded write: the lead is free
    index.commit_version(new_version("one", "c", b"c"))


def test_a_turn_that_cannot_be_unlocked_is_given_up_by_closing_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOCK_UN failing must neither keep the other processes waiting nor fail the
    batch that already committed: closing the file releases the lock all the same."""
    path = str(tmp_path / "writers.lock")
    mine, other = _WriterTurns(path), _WriterTurns(path)
    assert mine.try_take() and not other.try_take()
    real = fcntl.flock

    def unlock_fails(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, "No locks available")
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", unlock_fails)
    mine.give()
    monkeypatch.setattr(fcntl, "flock", real)
    assert other.try_take()  # the lock was released
    other.give()
    assert mine.try_take()  # and the next turn reopens the file


def test_an_error_of_the_driver_in_a_loop_write_is_unavailable_not_a_crash(
    index: ObjectIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(DriverQuery, "first", broken)

    async def main() -> None:
        with pytest.raises(ServiceUnavailable):
            await commit_async(index, "one", "a")

    asyncio.run(main())
    monkeypatch.undo()
    with pytest.raises(NoSuchKey):
        index.resolve_latest("one", "a")
    assert refcounts(index) == {}


def test_batches_share_one_connection_with_statement_journals_in_memory(
    index: ObjectIndex,
) -> None:
    """The committer keeps its connection from batch to batch (no pool checkout per
    batch). The loop's batches do not wait at BEGIN and keep their statement journals in
    memory; a thread's wait and keep them in a file (bulk deletions among them)."""
    committer = GroupCommitter(index.engine)
    checkouts: list[object] = []
    event.listen(index.engine, "checkout", lambda *args: checkouts.append(args))

    def settings(conn: Any) -> tuple[int, int]:
        timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        return int(conn.exec_driver_sql("PRAGMA temp_store").scalar()), int(timeout)

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(committer.run_async(settings) for _ in range(3)))

    assert asyncio.run(main()) == [(2, 0)] * 3  # MEMORY, no wait
    assert committer.run(settings) == (0, 30000)  # a thread's batch: DEFAULT (a file)
    for i in range(3):
        committer.run(lambda conn, i=i: index_commit(conn, new_version("one", "a", b"%d" % i)))
    assert asyncio.run(main()) == [(2, 0)] * 3
    assert len(checkouts) == 1
    committer.release()
    # Its driver connection does not go back to the pool with those PRAGMAs set on it.
    with index.engine.connect() as conn:
        assert settings(conn) == (0, 30000)


def test_an_in_memory_database_gets_a_connection_per_batch() -> None:
    """Its pool ties each connection to one thread: a kept one could not serve the
    loop's batches and a thread's both. Each is given back as the pool set it up."""
    url = f"sqlite:///file:gc-{os.getpid()}-{time.monotonic_ns()}?mode=memory&cache=shared&uri=true"
    engine = create_index_engine(url)
    keep_alive = engine.connect()  # the database lives while a connection does
    try:
        committer = GroupCommitter(engine)
        committer.run(lambda conn: conn.exec_driver_sql("CREATE TABLE t (x)"))

        async def insert() -> None:
            await committer.run_async(lambda conn: conn.exec_driver_sql("INSERT INTO t VALUES (1)"))

        asyncio.run(insert())
        counted: list[int] = []
        thread = threading.Thread(
            target=lambda: counted.append(
                committer.run(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM t").scalar())
            )
        )
        thread.start()
        thread.join()
        assert counted == [1]
        timeout = keep_alive.exec_driver_sql("PRAGMA busy_timeout").scalar()
        assert timeout == 30000
    finally:
        keep_alive.close()
        engine.dispose()


class _Interrupted(BaseException):
    """Escapes a batch as KeyboardInterrupt would, past the per-work handling."""


def test_a_batch_that_breaks_off_leaves_nothing_and_the_next_gets_a_fresh_connection(
    index: ObjectIndex,
) -> None:
    index.create_bucket("many")
    committer = GroupCommitter(index.engine)
    committer.run(lambda conn: index_commit(conn, new_version("one", "a", b"a")))
    closed: list[object] = []
    event.listen(index.engine, "close", lambda *args: closed.append(args))

    def interrupted(conn: Any) -> None:
        index_commit(conn, new_version("many", "b", b"b"))
        raise _Interrupted

    with pytest.raises(_Interrupted):
        committer.run(interrupted)
    assert len(closed) == 1  # the connection it broke off on is closed, not pooled
    with pytest.raises(NoSuchKey):
        index.resolve_latest("many", "b")  # rolled back with it
    committer.run(lambda conn: index_commit(conn, new_version("one", "a", b"again")))
    assert index.resolve_latest("one", "a").size == 5


def test_disposing_of_the_engine_closes_the_kept_connection(
    index: ObjectIndex, tmp_path: Path
) -> None:
    """As the pooled ones: the last connection to close deletes the WAL."""
    index.create_bucket("many")
    index.commit_version(new_version("one", "a", b"a"))
    assert (tmp_path / "index.db-wal").exists()
    index.engine.dispose()
    assert not (tmp_path / "index.db-wal").exists()
    index.commit_version(new_version("many", "b", b"b"))  # the next batch opens another
    assert index.resolve_latest("many", "b").size == 1
