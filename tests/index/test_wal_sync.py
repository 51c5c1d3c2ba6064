"""SQLite commits are acknowledged only after an fsync of the `-wal` file that began after
the COMMIT (index/wal_sync.py): the group committer's writes, any other connection that
changed rows, and migrations. One fsync covers every commit done before it started.

`os.fsync` and `os.fdatasync` are wrapped in-process: the wrapper records which file
each call flushed and can hold a call until the test releases it, so "not answered
before the fsync returned" is observed directly, not inferred from timing.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from tfstorage.errors import InternalError, NoSuchKey
from tfstorage.index import ObjectIndex, create_index_engine, migrate, wal_sync

from .builders import new_version

pytestmark = pytest.mark.timeout(60)


class Fsyncs:
    """Stand-ins for os.fsync and os.fdatasync (`wrap`) that record the path of each
    call, and hold the calls on the WAL while `hold` is set, one `release()` each."""

    def __init__(self, wal: str) -> None:
        self.wal = wal
        self.paths: list[str] = []
        self.hold = False
        self._gate = threading.Semaphore(0)
        self.waiting = threading.Semaphore(0)  # one release per held call that arrived

    def wrap(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def synced(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.paths.append(path)
            if path == self.wal and self.hold:
                self.waiting.release()
                assert self._gate.acquire(timeout=30), "the test never released this fsync"
            real(fd)

        return synced

    def release(self) -> None:
        self._gate.release()

    def of_wal(self) -> int:
        return self.paths.count(self.wal)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "index.db"


@pytest.fixture
def index(database: Path) -> Iterator[ObjectIndex]:
    engine = create_index_engine(f"sqlite:///{database}")
    migrate(engine)
    index = ObjectIndex(engine)
    index.create_bucket("b")
    yield index
    engine.dispose()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch, database: Path) -> Fsyncs:
    recorder = Fsyncs(f"{database}-wal")
    monkeypatch.setattr(os, "fsync", recorder.wrap(os.fsync))
    monkeypatch.setattr(os, "fdatasync", recorder.wrap(os.fdatasync))
    return recorder


def _commits(index: ObjectIndex) -> list[int]:
    """A list that grows by one at each COMMIT of the engine (before it runs)."""
    seen: list[int] = []
    event.listen(index.engine, "commit", lambda conn: seen.append(1))
    return seen


def _visible(index: ObjectIndex, key: str) -> bool:
    try:
        index.resolve_latest("b", key)
    except NoSuchKey:
        return False
    return True


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def test_a_write_is_not_answered_before_its_wal_fsync_returns(
    index: ObjectIndex, fsyncs: Fsyncs
) -> None:
    commits = _commits(index)
    fsyncs.hold = True
    writer, done = _in_thread(lambda: index.commit_version(new_version("b", "k", b"data")))
    assert fsyncs.waiting.acquire(timeout=10), "no fsync of the -wal file after the write"
    assert commits, "the fsync came before the COMMIT"
    # Committed (another connection reads it) but held in the fsync: not answered.
    assert index.resolve_latest("b", "k").size == 4
    writer.join(0.3)
    assert writer.is_alive() and not done
    fsyncs.release()
    writer.join(10)
    assert done and fsyncs.of_wal() == 1


def test_one_fsync_covers_every_commit_done_before_it_started(
    index: ObjectIndex, fsyncs: Fsyncs
) -> None:
    commits = _commits(index)
    fsyncs.hold = True
    first, _ = _in_thread(lambda: index.commit_version(new_version("b", "first", b"1")))
    assert fsyncs.waiting.acquire(timeout=10)
    # Eight writers commit while that fsync is held (the group commit lead has passed
    # on, so they are not stuck behind it); none may count on the fsync under way.
    writers = [
        _in_thread(lambda i=i: index.commit_version(new_version("b", f"k{i}", b"x")))
        for i in range(8)
    ]
    for _ in range(200):
        if len(commits) >= 2 and all(_visible(index, f"k{i}") for i in range(8)):
            break
        threading.Event().wait(0.05)
    assert all(_visible(index, f"k{i}") for i in range(8))
    assert all(thread.is_alive() for thread, _ in writers)
    fsyncs.release()
    first.join(10)
    assert not first.is_alive()
    # One more fsync, begun after all eight commits, answers all eight.
    assert fsyncs.waiting.acquire(timeout=10)
    assert all(thread.is_alive() for thread, _ in writers)
    fsyncs.release()
    for thread, done in writers:
        thread.join(10)
        assert done
    assert fsyncs.of_wal() == 2


def test_a_write_outside_the_group_committer_is_synced_before_its_connection_returns(
    index: ObjectIndex, fsyncs: Fsyncs
) -> None:
    with index.engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM buckets")).scalar()
    assert fsyncs.of_wal() == 0  # a read costs no fsync
    with index.engine.connect() as conn:
        conn.execute(text("UPDATE buckets SET versioning = versioning"))
        conn.commit()
        assert fsyncs.of_wal() == 0
    assert fsyncs.of_wal() == 1


def test_migrations_are_synced(database: Path, fsyncs: Fsyncs) -> None:
    engine = create_index_engine(f"sqlite:///{database}")
    try:
        migrate(engine)
    finally:
        engine.dispose()
    assert fsyncs.of_wal() >= 1
    # A WAL file seen for the first time: its directory entry is made durable too.
    assert str(database.parent) in fsyncs.paths


def test_a_new_wal_file_gets_its_directory_synced(database: Path, fsyncs: Fsyncs) -> None:
    def write_once(key: str) -> None:
        engine = create_index_engine(f"sqlite:///{database}")
        try:
            migrate(engine)
            ObjectIndex(engine).commit_version(new_version("b", key, b"x"))
        finally:
            engine.dispose()  # the last connection: SQLite checkpoints, deletes the WAL

    engine = create_index_engine(f"sqlite:///{database}")
    migrate(engine)
    ObjectIndex(engine).create_bucket("b")
    with engine.connect() as conn:  # has the WAL open: it stays across the next write
        conn.exec_driver_sql("SELECT count(*) FROM buckets").scalar()
        fsyncs.paths.clear()
        ObjectIndex(engine).commit_version(new_version("b", "same-wal", b"x"))
        assert fsyncs.paths == [fsyncs.wal]
    engine.dispose()
    assert not Path(fsyncs.wal).exists()
    fsyncs.paths.clear()
    write_once("new-wal")
    assert fsyncs.wal in fsyncs.paths and str(database.parent) in fsyncs.paths


def test_a_failed_wal_fsync_fails_the_write(
    index: ObjectIndex, monkeypatch: pytest.MonkeyPatch, database: Path
) -> None:
    failing = {"on": True}

    def failing_on_the_wal(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            if failing["on"] and os.readlink(f"/proc/self/fd/{fd}") == f"{database}-wal":
                raise OSError(5, "Input/output error")
            real(fd)

        return sync

    monkeypatch.setattr(os, "fsync", failing_on_the_wal(os.fsync))
    monkeypatch.setattr(os, "fdatasync", failing_on_the_wal(os.fdatasync))
    with pytest.raises(InternalError):
        index.commit_version(new_version("b", "k", b"data"))
    failing["on"] = False
    index.commit_version(new_version("b", "k2", b"data"))  # the next write is answered


def test_a_database_that_is_not_a_plain_file_keeps_full(tmp_path: Path) -> None:
    for url in ("sqlite://", f"sqlite:///file:{tmp_path / 'u.db'}?uri=true"):
        engine = create_index_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2, url
        finally:
            engine.dispose()


def test_a_disposed_engine_leaves_no_wal_file_open(database: Path, fsyncs: Fsyncs) -> None:
    engine = create_index_engine(f"sqlite:///{database}")
    migrate(engine)
    ObjectIndex(engine).create_bucket("b")
    engine.dispose()
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
    assert fsyncs.of_wal() >= 1
    assert not [path for path in held if path.startswith(fsyncs.wal)], held


def test_checkpoints_run_in_their_own_thread_not_in_a_commit(
    index: ObjectIndex, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No COMMIT checkpoints (one from the event loop would stall it for two fsyncs):
    the index's connections never do, and the syncer's thread copies the WAL into the
    database instead."""
    with index.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    threads: set[str] = set()
    real = wal_sync.WalSyncer.checkpoint

    def checkpoint(syncer: wal_sync.WalSyncer) -> None:
        threads.add(threading.current_thread().name)
        real(syncer)

    monkeypatch.setattr(wal_sync.WalSyncer, "checkpoint", checkpoint)
    time.sleep(2 * wal_sync.CHECKPOINT_INTERVAL)  # one the fixture's writes asked for
    size = database.stat().st_size
    deadline = time.monotonic() + 20
    i = 0
    while not threads or database.stat().st_size <= size:
        assert time.monotonic() < deadline, "the WAL was never checkpointed"
        index.commit_version(new_version("b", f"k{i}", os.urandom(64)))
        i += 1
        time.sleep(0.01)
    assert threads == {"wal-checkpoints"}
    assert _visible(index, "k0")


def _writes_until_checkpointed(path: str) -> None:
    """In a forked child: commits until the checkpoint thread has copied the WAL into
    the database file; exit status 0 if it did within 10 s."""
    database = Path(path)
    engine = create_index_engine(f"sqlite:///{database}")
    migrate(engine)
    index = ObjectIndex(engine)
    index.create_bucket("b")
    time.sleep(2 * wal_sync.CHECKPOINT_INTERVAL)
    size = database.stat().st_size
    deadline = time.monotonic() + 10
    i = 0
    while database.stat().st_size <= size:
        if time.monotonic() > deadline:
            os._exit(1)
        index.commit_version(new_version("b", f"k{i}", os.urandom(64)))
        i += 1
        time.sleep(0.01)
    os._exit(0)


def test_a_forked_child_checkpoints_too(index: ObjectIndex, tmp_path: Path) -> None:
    """The parent's checkpoint thread does not survive a fork: the child starts its own
    (else its WAL would grow for ever)."""
    index.commit_version(new_version("b", "parent", b"p"))  # the parent's thread runs
    child = multiprocessing.get_context("fork").Process(
        target=_writes_until_checkpointed, args=(str(tmp_path / "child.db"),)
    )
    child.start()
    child.join(30)
    assert child.exitcode == 0


def test_a_wal_under_steady_writes_starts_over_instead_of_growing(tmp_path: Path) -> None:
    """SQLite writes the WAL from its start again only when a transaction begins with
    every frame checkpointed: under steady writes one always committed while a
    checkpoint ran, and the WAL grew for ever. Past RESTART_FRAMES the checkpoint
    restarts it. A writer here commits and syncs as the index does, its syncs asking
    the checkpoint thread for checkpoints."""
    import sqlite3

    path = str(tmp_path / "wal.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    syncer = wal_sync.WalSyncer(path)
    try:
        for _ in range(4 * wal_sync.RESTART_FRAMES):  # 3 pages a commit: 12,000+ frames
            conn.execute("INSERT INTO t (v) VALUES (randomblob(9000))")
            syncer.sync()
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
        syncer.forget()
    assert frames < 2 * wal_sync.RESTART_FRAMES, frames
