"""Group commit for SQLite: concurrent write transactions share one COMMIT (one fsync).

SQLite admits one writer at a time and each COMMIT waits for an fsync, so N concurrent
small uploads would cost N fsyncs in a row. Writers of this process queue here instead;
whoever finds no batch running becomes the leader and runs everything queued so far in
one transaction, each work inside its own SAVEPOINT so that one failing (NoSuchBucket,
say) is rolled back alone and the others still commit together.

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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

from tfstorage.index.engine import (
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


class GroupCommitter:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition()
        self._queue: list[_Pending[Any]] = []
        self._leading = False
        self._syncer = sqlite_wal_syncer(engine)
        database = sqlite_database_file(engine)
        self._turns = _WriterTurns(f"{database}-writers.lock") if database else None

    def run(self, work: Callable[[Connection], _T]) -> _T:
        if getattr(_inside, "work", False):
            # The leader would queue this behind itself and wait forever.
            raise RuntimeError("an index write cannot start inside another one")
        item: _Pending[_T] = _Pending(work)
        with self._cond:
            self._queue.append(item)
            while self._leading and not item.done:
                self._cond.wait()
            if not item.done:
                self._leading = True
        if not item.done:
            try:
                self._lead(item)
            finally:
                with self._cond:
                    self._leading = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        if self._syncer is not None:
            self._syncer.sync()  # durable before the caller can answer
        return item.result  # type: ignore[no-any-return]

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

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        turn = self._turns.take() if self._turns is not None else contextlib.nullcontext()
        with turn, self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            conn.info[SYNCED_BY_CALLER] = True  # run() syncs, after the lead passes on
            if len(batch) == 1:
                _commit_alone(conn, batch[0])
                return
            with conn.begin():
                for item in batch:
                    savepoint = conn.begin_nested()
                    _inside.work = True
                    try:
                        item.result = item.work(conn)
                    except Exception as exc:
                        savepoint.rollback()
                        item.error = exc
                    else:
                        savepoint.commit()
                    finally:
                        _inside.work = False


def _commit_alone(conn: Connection, item: _Pending[Any]) -> None:
    """A batch of one (every write when they come one at a time): the transaction is
    the item's own, so a failure rolls it back without the SAVEPOINT round trips."""
    transaction = conn.begin()
    _inside.work = True
    try:
        item.result = item.work(conn)
    except Exception as exc:
        transaction.rollback()
        item.error = exc
        return
    finally:
        _inside.work = False
    transaction.commit()  # a failure here reaches _lead: nothing was written


class _WriterTurns:
    """The processes' turns at writing one SQLite file: an exclusive flock, taken by
    the one leader thread of this process at a time and released by the kernel if the
    process dies holding it."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
