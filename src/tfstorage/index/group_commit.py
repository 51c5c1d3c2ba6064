"""Group commit for SQLite: concurrent write transactions share one COMMIT (one fsync).

SQLite admits one writer at a time and each COMMIT waits for an fsync, so N concurrent
small uploads would cost N fsyncs in a row. Writers of this process queue here instead;
whoever finds no batch running becomes the leader and runs everything queued so far in
one transaction. A failing work (NoSuchBucket, say) is rolled back alone and the
others still commit together: when any of it fails, the batch runs again in a new
transaction with each work inside its own SAVEPOINT.

The COMMIT itself does not fsync (synchronous=NORMAL, index/wal_sync.py): once the lead
has passed on, each writer waits for a WAL fsync that began after its COMMIT, so the
next batch commits while this one's fsync runs, and one fsync serves many batches and
the other worker processes' commits too.

Between processes (WORKERS=N on one file), the leaders take turns on a lock file beside
the database before BEGIN IMMEDIATE. Without it the loser of a race for SQLite's write
lock polls in its busy handler, which sleeps 1, 2, 5, 10 ... 100 ms between attempts:
two workers then wrote no more than one (`bench/run.py --only workers`: 443 4 KiB PUT/s
with one worker, 445 with two; 8 clients saw a p99 of ~100 ms with two). A blocked
flock wakes as soon as the holder lets go, and the queue the waiting leader gathered
meanwhile commits as one batch.

A caller on an event loop (`run_async`, the upload path) does not hop to a worker
thread at all: its work queues on the loop, and one task per loop commits what the
requests of one loop iteration queued, on the loop thread itself, then awaits one WAL
fsync in a thread for the whole batch. A SQLite write transaction takes well under a
millisecond and never waits for the disk (the fsync comes after COMMIT), whereas a
worker thread's commit competes with the loop for the GIL at each of its statements:
8 clients' 4 KiB PUTs saw their batches take ~1.9 ms per item that way against ~0.8
ms in isolation. The loop never waits for a lock either. When a thread of this process
leads, or a writer outside the committers holds SQLite's lock (BEGIN IMMEDIATE is
tried without a busy timeout), the batch goes to a worker thread and commits there as
any threaded batch does; when another process has the turn, a thread waits for it and
the batch then commits on the loop. Checkpoints, which fsync, never run in a COMMIT
(index/wal_sync.py).

Every batch of a database file, on the loop or in a thread, runs on one connection that
the committer keeps from batch to batch (one leader at a time uses it): taking one from
the pool and giving it back, with the pool's events, and the two `busy_timeout` PRAGMAs
that were run around each BEGIN cost about a tenth of a batch of one. Its PRAGMAs change
only when a batch of the other kind comes. The loop's batches (a few uploads each) do
not wait at BEGIN (`busy_timeout=0`) and keep their statement journals in memory
(`temp_store=MEMORY`): a write under a trigger journals the pages it changes, and past
64 KiB SQLite spilled that journal to a temporary file, created, written page by page
and deleted within the batch. A thread's batches wait (BUSY_TIMEOUT_MS) and keep the
file: one statement of a bucket's deletion may journal the pages of a million versions.
An in-memory database, whose pool ties each connection to a thread, gets a connection
per batch, given back with the pool's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, NestedTransaction, RootTransaction, event
from sqlalchemy.exc import OperationalError

from tfstorage.index.engine import (
    BUSY_TIMEOUT_MS,
    SYNCED_BY_CALLER,
    WRITE_OPTION,
    sqlite_database_file,
    sqlite_wal_syncer,
)

_T = TypeVar("_T")
MAX_BATCH = 64
_inside = threading.local()


@dataclass(eq=False)
class _Pending(Generic[_T]):
    work: Callable[[Connection], _T]
    done: bool = False
    result: Any = None
    error: BaseException | None = field(default=None)
    future: asyncio.Future[Any] | None = None  # run_async's caller awaits it


@dataclass(eq=False)
class _LoopQueue:
    """The writes queued on one event loop, and the task committing them."""

    items: list[_Pending[Any]] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    settling: set[asyncio.Task[None]] = field(default_factory=set)


class _Busy(Exception):
    """BEGIN IMMEDIATE found SQLite's write lock taken (tried without waiting)."""


class GroupCommitter:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._queue: list[_Pending[Any]] = []
        self._leading = False
        self._syncer = sqlite_wal_syncer(engine)
        database = sqlite_database_file(engine)
        self._turns = _WriterTurns(f"{database}-writers.lock") if database else None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = (
            weakref.WeakKeyDictionary()
        )
        # The leader's connection (`_connection`), and whether to close it once the
        # lead is given back (`release` came while a batch was running).
        self._kept: Connection | None = None
        self._keeps_connection = database is not None
        # Which kind of batch the connection's PRAGMAs are set for (None: not yet set).
        self._set_for_loop: bool | None = None
        self._release_pending = False
        self._followed: weakref.WeakSet[Engine] = weakref.WeakSet()
        self.follow(engine)

    def run(self, work: Callable[[Connection], _T]) -> _T:
        if getattr(_inside, "work", False):
            # The leader would queue this behind itself and wait forever.
            raise RuntimeError("an index write cannot start inside another one")
        item: _Pending[_T] = _Pending(work)
        self._run_items([item])
        if item.error is not None:
            raise item.error
        if self._syncer is not None:
            self._syncer.sync()  # durable before the caller can answer
        return item.result  # type: ignore[no-any-return]

    async def run_async(self, work: Callable[[Connection], _T]) -> _T:
        """`run` for a caller on an event loop: the work runs on the loop thread (the
        module docstring says why), batched with the writes queued in the same loop
        iteration; returns once its transaction is durable."""
        loop = asyncio.get_running_loop()
        queue = self._loops.get(loop)
        if queue is None:
            queue = self._loops[loop] = _LoopQueue()
        item: _Pending[_T] = _Pending(work, future=loop.create_future())
        queue.items.append(item)
        if queue.flusher is None:
            queue.flusher = loop.create_task(self._flush(queue))
        assert item.future is not None
        # A cancelled caller stops waiting; its write still commits or fails whole.
        return await item.future  # type: ignore[no-any-return]

    def _run_items(self, items: list[_Pending[Any]]) -> None:
        """Queue `items` and return once they are done, leading batches if no one is."""
        with self._cond:
            self._queue.extend(items)
            while self._leading and not all(item.done for item in items):
                self._cond.wait()
            lead = not all(item.done for item in items)
            if lead:
                self._leading = True
        if lead:
            try:
                for item in items:
                    self._lead(item)
            finally:
                self._give_lead()

    async def _flush(self, queue: _LoopQueue) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Pending[Any]] = []
        try:
            while queue.items:
                # Let the requests made ready with this one queue their writes too.
                await asyncio.sleep(0)
                failure: Exception | None = None
                try:
                    leading = await self._lead_here()
                except Exception as exc:  # the turn could not be taken: nothing runs
                    leading, failure = False, exc
                # Taken once the turn is ours, so what queued while another process had
                # it commits now too, not in a batch of its own after (WORKERS=2, 8
                # clients: 34% more 4 KiB PUT/s, 27% less CPU per PUT).
                batch, queue.items = queue.items[:MAX_BATCH], queue.items[MAX_BATCH:]
                if failure is not None:
                    for item in batch:
                        item.error = failure
                    here = True
                else:
                    here = leading and self._commit_here(batch)
                if not here:
                    # A thread of this process leads, or a writer outside the group
                    # committers holds SQLite's lock: wait in a thread, not here.
                    await loop.run_in_executor(None, self._run_items, batch)
                settle = loop.create_task(self._settle(batch))
                queue.settling.add(settle)  # the loop holds tasks weakly
                settle.add_done_callback(queue.settling.discard)
                batch = []
        finally:
            queue.flusher = None
            # Only when the loop itself is shutting down: no caller is left hanging.
            for item in batch + queue.items:
                if item.future is not None and not item.future.done():
                    item.future.cancel()

    async def _lead_here(self) -> bool:
        """Lead on the loop's thread, with the turn among processes; False (holding
        neither) when a thread of this process leads. Another process's turn is
        awaited in a thread: it ends within one batch of theirs."""
        with self._cond:
            if self._leading:
                return False
            self._leading = True
        turns = self._turns
        try:
            if turns is None or turns.try_take():
                return True
        except BaseException:  # the lock file cannot be opened or locked
            self._give_lead()
            raise
        taking = asyncio.get_running_loop().run_in_executor(None, turns.take_waiting)
        try:
            await asyncio.shield(taking)
        except BaseException:
            # Cancelled (the loop is closing): give the turn back once the thread has it.
            taking.add_done_callback(lambda done: _give_if_taken(turns, done))
            self._give_lead()
            raise
        return True

    def _give_lead(self) -> None:
        with self._cond:
            self._leading = False
            self._cond.notify_all()
            closing = None
            if self._release_pending:
                closing, self._kept, self._release_pending = self._kept, None, False
        if closing is not None:
            _discard(closing)

    def follow(self, engine: Engine) -> None:
        """Release the kept connection whenever `engine` (this database's) is disposed
        of, as its pooled ones are closed: a WAL is deleted only by the last connection
        to close, and a database file replaced meanwhile must not be written through
        one still open on the old file."""
        with self._cond:
            if engine in self._followed:
                return
            self._followed.add(engine)
        event.listen(engine, "engine_disposed", self._on_disposed)

    def _on_disposed(self, _engine: Engine) -> None:
        self.release()

    def release(self) -> None:
        """Close the kept connection (the index is disposed of); the next batch opens
        another. One that a leader is using, or opening, now closes once the lead is
        given back."""
        with self._cond:
            if self._leading:
                self._release_pending = True
                return
            kept, self._kept = self._kept, None
        if kept is not None:
            _discard(kept)

    def _connection(self, *, loop_batch: bool) -> Connection:
        """The leader's connection, set for a batch of the loop's or a thread's (the
        module docstring says why it is kept and what differs)."""
        conn = self._kept
        if conn is None or conn.invalidated:
            conn = self._engine.connect()
            try:
                conn.execution_options(**{WRITE_OPTION: True})
                # Its writers call the WAL syncer themselves, after the lead has passed on.
                conn.info[SYNCED_BY_CALLER] = True
            except BaseException:
                _discard(conn)
                raise
            self._set_for_loop = None
            if self._keeps_connection:
                self._kept = conn
        if self._set_for_loop is not loop_batch:
            try:
                _set_for(conn, loop_batch=loop_batch)
            except BaseException:
                self._done_with(conn, broken=True)
                raise
            self._set_for_loop = loop_batch
        return conn

    def _done_with(self, conn: Connection, *, broken: bool) -> None:
        """After a batch. The kept connection stays, unless broken: whatever state it is
        in then, it is closed for good and the next batch gets a fresh one. One that is
        not kept goes back to the pool as the pool set it up (closing it rolls back what
        a failure left)."""
        if self._keeps_connection:
            if broken:
                with self._cond:
                    if self._kept is conn:
                        self._kept = None
                _discard(conn)
            return
        try:
            _set_for(conn, loop_batch=False)  # what engine.py's connect hook set
        except Exception:
            with contextlib.suppress(Exception):
                conn.invalidate()  # not back to the pool with this batch's settings
        conn.close()

    def _commit_here(self, batch: list[_Pending[Any]]) -> bool:
        """Commit `batch` on this thread, which leads and holds the turn (both given
        back here), unless SQLite's write lock is held by a writer outside the group
        committers: then False, and nothing of the batch stays."""
        try:
            self._commit(batch, wait=False)
        except _Busy:
            return False
        except BaseException as exc:  # the COMMIT itself failed: nothing was written
            for item in batch:
                if item.error is None:
                    item.error, item.result = exc, None
        finally:
            try:
                if self._turns is not None:
                    self._turns.give()
            finally:
                self._give_lead()
        for item in batch:
            item.done = True
        return True

    async def _settle(self, batch: list[_Pending[Any]]) -> None:
        """Answer a committed batch's callers once one WAL fsync has covered it."""
        failure: BaseException | None = None
        if self._syncer is not None and any(item.error is None for item in batch):
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._syncer.sync)
            except Exception as exc:
                failure = exc
        for item in batch:
            future = item.future
            if future is None or future.done():
                continue
            error = item.error or failure
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(item.result)

    def _lead(self, mine: _Pending[Any]) -> None:
        # Until this thread's own work is done, then the lead passes on (run() wakes the
        # waiters): under steady load no request stays leader for ever.
        while not mine.done:
            with self._cond:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            if not batch:
                return
            try:
                self._commit(batch)
            except BaseException as exc:  # the COMMIT itself failed: nothing was written
                for item in batch:
                    if item.error is None:
                        item.error = exc
                        item.result = None
            with self._cond:
                for item in batch:
                    item.done = True
                self._cond.notify_all()

    def _commit(self, batch: list[_Pending[Any]], *, wait: bool = True) -> None:
        """Run `batch` in one transaction (a second one when a work fails). With
        wait=False the caller holds the turn already, and a write lock held elsewhere
        raises _Busy instead of waiting."""
        turn = self._turns.take() if self._turns and wait else contextlib.nullcontext()
        with turn:
            # wait=False is a batch of the loop's (`_commit_here`): a few uploads.
            conn = self._connection(loop_batch=not wait)
            begin = conn.begin if wait else functools.partial(_begin_at_once, conn)
            broken = True  # unless the batch ends as it should, or BEGIN found it _Busy
            try:
                transaction = begin()
                if len(batch) == 1:
                    _run_in(transaction, conn, batch[0])
                elif not _all_at_once(transaction, conn, batch):
                    # A work failed and the transaction was rolled back: again, one by
                    # one. With wait=False, another writer may have taken the lock.
                    with begin():
                        _one_by_one(conn, batch)
                broken = False
            except _Busy:
                broken = False  # no transaction was begun: the connection is as it was
                raise
            finally:
                self._done_with(conn, broken=broken)


def _all_at_once(
    transaction: RootTransaction, conn: Connection, batch: list[_Pending[Any]]
) -> bool:
    """The batch in one transaction, committed: True when every work succeeded. Else
    nothing of it stays (the first failure rolls the transaction back) and the caller
    runs it again one by one: failures are rare.

    No SAVEPOINT around the batch: SQLite keeps the original of every page changed
    under a savepoint in a sub-journal, a temporary file once past 64 KiB, which a
    batch of a few uploads (~20 pages each) passed: a file created, written page by
    page and deleted per batch, twice the CPU of the batch's statements themselves."""
    _inside.work = True
    try:
        for item in batch:
            item.result = item.work(conn)
    except Exception:
        transaction.rollback()
        for item in batch:
            item.result = None
        return False
    finally:
        _inside.work = False
    transaction.commit()  # a failure here reaches the leader: nothing of it was written
    return True


def _one_by_one(conn: Connection, batch: list[_Pending[Any]]) -> None:
    """Each work in its own SAVEPOINT: one failing is rolled back alone."""
    for item in batch:
        _run_in(conn.begin_nested(), conn, item)


def _begin_at_once(conn: Connection) -> RootTransaction:
    """BEGIN IMMEDIATE on a connection set for the loop (busy_timeout=0), or _Busy if
    another connection holds the write lock. Once it is ours nothing in the transaction
    waits for a lock again (a WAL COMMIT does not)."""
    try:
        return conn.begin()
    except OperationalError as exc:
        # The primary code: SQLITE_BUSY_RECOVERY and friends are busy too.
        if getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
            raise _Busy from exc
        raise


def _set_for(conn: Connection, *, loop_batch: bool) -> None:
    raw = _driver(conn)
    raw.execute(f"PRAGMA busy_timeout={0 if loop_batch else BUSY_TIMEOUT_MS}")
    raw.execute(f"PRAGMA temp_store={'MEMORY' if loop_batch else 'DEFAULT'}")


def _driver(conn: Connection) -> sqlite3.Connection:
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def _discard(conn: Connection) -> None:
    """Close `conn` for good: its driver connection, with the PRAGMAs set on it, does
    not go back to the pool for other uses."""
    with contextlib.suppress(Exception):
        conn.invalidate()
    with contextlib.suppress(Exception):
        conn.close()


def _run_in(
    transaction: RootTransaction | NestedTransaction, conn: Connection, item: _Pending[Any]
) -> None:
    """Run `item` in `transaction` (its own, or a SAVEPOINT): committed, or rolled back
    with the item's error kept. A batch of one (every write when they come one at a
    time) runs in its own transaction, without the SAVEPOINT round trips."""
    _inside.work = True
    try:
        item.result = item.work(conn)
    except Exception as exc:
        transaction.rollback()
        item.error = exc
        return
    finally:
        _inside.work = False
    transaction.commit()  # a failure here reaches the leader: nothing of it was written


def _give_if_taken(turns: _WriterTurns, taking: asyncio.Future[None]) -> None:
    if not taking.cancelled() and taking.exception() is None:
        turns.give()


class _WriterTurns:
    """The processes' turns at writing one SQLite file: an exclusive flock, taken by
    the one leader of this process at a time and released by the kernel if the
    process dies holding it."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        self.take_waiting()
        try:
            yield
        finally:
            self.give()

    def take_waiting(self) -> None:
        fcntl.flock(self._file(), fcntl.LOCK_EX)

    def try_take(self) -> bool:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def give(self) -> None:
        try:
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        except OSError:
            # Closing the file lets go of the lock as surely; the next turn reopens it.
            # (Raised from here, a batch that did commit would be answered as failed.)
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd
