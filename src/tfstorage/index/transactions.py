"""Transactions over the index's engine: retried on PostgreSQL conflicts, errors
translated into the service's own (no SQL or driver text ever reaches a client)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tfstorage.errors import InternalError, ServiceUnavailable, StorageError
from tfstorage.index.engine import SINGLE_STATEMENT_OPTION, WRITE_OPTION
from tfstorage.index.group_commit import GroupCommitter

_T = TypeVar("_T")

MAX_PAGE: Final = 1000
# PostgreSQL rolls back the whole transaction on these, so running it again is safe.
_RETRYABLE_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization, deadlock
_ATTEMPTS: Final = 5


class IndexStore:
    """Base of the index's stores: one transaction per public method, thread-safe
    (it holds nothing but the engine, whose pool gives each call its own connection)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # SQLite admits one writer; the others would poll its lock with growing sleeps
        # (sqlite3's busy handler), each then paying its own fsync. This process's
        # writers queue on one group committer per database instead.
        self._committer = _committer(engine) if engine.dialect.name == "sqlite" else None
        self._loop_readers = _loop_readers(engine) if engine.dialect.name == "sqlite" else None
        self._read_options: dict[str, Any] = {}
        self._statement_options: dict[str, Any] = {SINGLE_STATEMENT_OPTION: True}
        if engine.dialect.name == "postgresql":
            self._statement_options = {"isolation_level": "AUTOCOMMIT"}
            # Multi-statement reads (a listing page, then its rows and tags) see one
            # snapshot; read-only snapshots never fail with serialization errors.
            self._read_options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        """ "sqlite" or "postgresql", for health reports."""
        return str(self._engine.dialect.name)

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown)."""
        if self._loop_readers is not None:
            self._loop_readers.close_all()
        self._engine.dispose()

    def _read(self, work: Callable[[Connection], _T]) -> _T:
        return self._transaction(work, self._read_options)

    def _read_statement(self, work: Callable[[Connection], _T]) -> _T:
        """A read that is one SQL statement: it sees one snapshot by itself (SQLite
        runs a statement outside BEGIN as its own read transaction, PostgreSQL in
        autocommit likewise), so it skips BEGIN and COMMIT."""

        def once() -> _T:
            with self._engine.connect() as conn:
                return work(conn.execution_options(**self._statement_options))

        return self._retrying(once)

    def _read_driver(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """A one-statement read on SQLite run on the driver's own connection (from the
        pool, in autocommit: the statement is its own read transaction), for the reads
        every request makes; errors as the other paths translate them."""
        readers = self._loop_readers
        try:
            held = None if readers is None else readers.driver()
            if readers is not None and held is not None:
                try:
                    return work(held)
                except sqlite3.Error:
                    readers.drop()  # a fresh one next time
                    raise
            pooled = self._engine.raw_connection()
            try:
                driver = pooled.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                return work(driver)
            finally:
                pooled.close()
        except StorageError:
            raise
        except sqlite3.Error as exc:
            raise _translate_driver(exc) from exc
        except SQLAlchemyError as exc:  # the pool's own (a timeout, say)
            raise _translate(exc) from exc

    def _write(self, work: Callable[[Connection], _T]) -> _T:
        committer = self._committer
        if committer is None:
            return self._transaction(work, {WRITE_OPTION: True})
        return self._retrying(lambda: committer.run(work))

    async def _write_async(self, work: Callable[[Connection], _T]) -> _T:
        """`_write` for a caller on an event loop. On SQLite the work runs on the loop
        itself, batched with the loop's other writes (group_commit.py says why);
        PostgreSQL's round trips go to a worker thread."""
        committer = self._committer
        if committer is None:
            return await anyio.to_thread.run_sync(self._write, work)
        try:
            return await committer.run_async(work)
        except StorageError:
            raise
        except SQLAlchemyError as exc:  # SQLite has nothing to retry (see _retryable)
            raise _translate(exc) from exc
        except sqlite3.Error as exc:  # a read on the driver's connection (index/driver.py)
            raise _translate_driver(exc) from exc

    def _transaction(self, work: Callable[[Connection], _T], options: dict[str, Any]) -> _T:
        def once() -> _T:
            with self._engine.connect() as conn:
                conn.execution_options(**options)
                with conn.begin():
                    return work(conn)

        return self._retrying(once)

    @staticmethod
    def _retrying(attempt_once: Callable[[], _T]) -> _T:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return attempt_once()
            except StorageError:
                raise
            except DBAPIError as exc:
                if attempt < _ATTEMPTS and _retryable(exc):
                    # Jittered backoff so the transactions that collided do not again.
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                raise _translate(exc) from exc
            except SQLAlchemyError as exc:
                raise _translate(exc) from exc
            except sqlite3.Error as exc:  # a read on the driver's connection
                raise _translate_driver(exc) from exc
        raise InternalError("unreachable")  # pragma: no cover


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _translate_driver(exc: sqlite3.Error) -> StorageError:
    """`_translate` for an error raised by sqlite3 itself (index/driver.py's reads)."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, I/O, disk full
        return ServiceUnavailable("the metadata index is unavailable; retry later")
    return InternalError("the metadata index failed")


def _translate(exc: SQLAlchemyError) -> StorageError:
    # Messages stay generic: the SQL and driver text go to logs via __cause__ only.
    if isinstance(exc, OperationalError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return ServiceUnavailable("the metadata index is unavailable; retry later")
    return InternalError("the metadata index failed")


class _LoopReaders:
    """The pooled connection an event loop's thread keeps for its one-statement reads
    (`_read_driver`, run on the loop: every GET, HEAD and PUT makes one or two).
    Checking a connection out of the pool and back, with its events, cost about as
    much as the read itself. Only loop threads keep one (a worker thread per connection
    could drain the pool); each read is still its own transaction, so it sees every
    commit made before it, by any connection or process."""

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)  # held weakly: _READERS is keyed by it
        self._local = threading.local()
        self._guard = threading.Lock()
        self._held: set[Any] = set()  # every thread's, to close at dispose
        self._generation = 0  # a thread's connection from before close_all is gone

    def driver(self) -> sqlite3.Connection | None:
        """This loop thread's connection; None on a thread without a running loop."""
        kept: _Kept | None = getattr(self._local, "kept", None)
        if kept is None or kept.generation != self._generation:
            engine = self._engine()
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return None
            if engine is None:
                return None
            pooled = engine.raw_connection()
            with self._guard:
                self._held.add(pooled)
                kept = self._local.kept = _Kept(self._generation, pooled)
            # The thread's locals go when it ends (a loop run in a short-lived thread):
            # its connection then goes back to the pool instead of holding a slot.
            weakref.finalize(kept, self._give_back, pooled)
        driver = kept.pooled.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        return driver

    def drop(self) -> None:
        """After an error on it: this thread's connection goes, unused again."""
        kept: _Kept | None = getattr(self._local, "kept", None)
        self._local.kept = None
        if kept is not None and self._forget(kept.pooled):
            kept.pooled.invalidate()

    def close_all(self) -> None:
        with self._guard:
            held, self._held = self._held, set()
            self._generation += 1
        for pooled in held:
            pooled.close()

    def _forget(self, pooled: Any) -> bool:
        """Whether `pooled` was still held (not given back by close_all meanwhile)."""
        with self._guard:
            held = pooled in self._held
            self._held.discard(pooled)
        return held

    def _give_back(self, pooled: Any) -> None:
        if self._forget(pooled):
            pooled.close()


@dataclass(eq=False)
class _Kept:
    generation: int
    pooled: Any


_READERS: weakref.WeakKeyDictionary[Engine, _LoopReaders] = weakref.WeakKeyDictionary()
_READERS_GUARD = threading.Lock()


def _loop_readers(engine: Engine) -> _LoopReaders:
    """One per engine, shared by every store of this process using it."""
    with _READERS_GUARD:
        readers = _READERS.get(engine)
        if readers is None:
            readers = _READERS[engine] = _LoopReaders(engine)
        return readers


_COMMITTERS: dict[str, GroupCommitter] = {}
_COMMITTERS_GUARD = threading.Lock()


def _committer(engine: Engine) -> GroupCommitter:
    """One committer per database file, shared by every store of this process."""
    with _COMMITTERS_GUARD:
        committer = _COMMITTERS.get(str(engine.url))
        if committer is None:
            committer = _COMMITTERS[str(engine.url)] = GroupCommitter(engine)
    committer.follow(engine)
    return committer
