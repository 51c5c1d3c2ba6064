"""Engines for the index (SQLite or PostgreSQL) and the schema migration entry point."""

from __future__ import annotations

import contextlib
import fcntl
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from tfstorage.errors import ConfigError
from tfstorage.index import json_codec
from tfstorage.index.wal_sync import WalSyncer, wal_syncer

# Execution option marking a connection whose transaction will write: on SQLite it
# begins with BEGIN IMMEDIATE so writers queue on busy_timeout instead of failing with
# SQLITE_BUSY_SNAPSHOT when a deferred read transaction tries to upgrade.
WRITE_OPTION = "tfstorage_write"
# Execution option of a SQLite connection that runs one statement and no BEGIN: the
# statement is then its own read transaction (IndexStore._read_statement).
SINGLE_STATEMENT_OPTION = "tfstorage_single_statement"
# Key of a pooled SQLite connection's `info`: set by a writer that calls the WAL syncer
# itself (the group committer, once it has passed the lead on, on the connection it
# keeps); any other connection that changed rows is synced at check-in.
SYNCED_BY_CALLER = "tfstorage_synced_by_caller"
# How long a SQLite connection waits for another's write lock before SQLITE_BUSY.
BUSY_TIMEOUT_MS = 30_000
_CHANGES_AT_CHECKOUT = "tfstorage_changes_at_checkout"

_MIGRATIONS = Path(__file__).parent / "migrations"
# Arbitrary constant shared by every instance: serialises concurrent `migrate` calls.
_MIGRATION_LOCK_ID = 0x7F5_0001
# Alembic's `context` is a module-level proxy: two upgrades in one process at once would
# share it. The database locks below only serialise separate processes.
_PROCESS_LOCK = threading.Lock()


def create_index_engine(url: str) -> Engine:
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        json_serializer=json_codec.dumps,
        json_deserializer=json_codec.loads,
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to the newest revision (or to `revision`: tests of a migration
    start from the one before it); safe to call on every start."""
    if revision == "head" and _current_revision(engine) == head_revision():
        # The usual start: nothing to do, and Alembic (with Mako and Pygments, some 10 MiB
        # of modules in every worker process) is not even imported.
        return
    with _PROCESS_LOCK, engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            conn.commit()
            try:
                _upgrade(conn, revision)
            finally:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                conn.commit()
        else:
            # BEGIN IMMEDIATE: a second process waits, then finds the schema current. A
            # lock file beside the database as well: a run of three processes migrating a
            # fresh file together was seen to apply one revision twice ("duplicate column
            # name") now and then, and Alembic's transaction handling on SQLite is not
            # something to rely on for mutual exclusion.
            with _file_lock(engine):
                _upgrade(conn.execution_options(**{WRITE_OPTION: True}), revision)
                # DDL changes no rows, so the check-in hook would not see it: FULL's
                # durability for the schema too.
                if (syncer := sqlite_wal_syncer(engine)) is not None:
                    syncer.sync()


def sqlite_wal_syncer(engine: Engine) -> WalSyncer | None:
    """The syncer that makes `engine`'s commits durable (index/wal_sync.py); None where
    COMMIT does it itself (PostgreSQL, and SQLite databases that are not a plain file,
    which keep synchronous=FULL)."""
    if engine.dialect.name != "sqlite":
        return None
    database = _wal_database(engine.url)
    return wal_syncer(database) if database is not None else None


def sqlite_database_file(engine: Engine) -> str | None:
    """The path of `engine`'s SQLite file; None on PostgreSQL and for databases that
    are not a plain file (in memory, URI)."""
    return _wal_database(engine.url) if engine.dialect.name == "sqlite" else None


def _wal_database(url: URL) -> str | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode"):
        return None
    return database


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    database = engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        yield  # no file of its own to lock beside (in-memory or URI databases)
        return
    with open(f"{database}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def head_revision() -> str:
    """The newest revision: the highest-numbered file's (revisions form one chain, each
    file named after its number)."""
    newest = max(_MIGRATIONS.glob("versions/[0-9][0-9][0-9][0-9]_*.py"))
    found = re.search(r'^revision: str = "([^"]+)"', newest.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no revision in {newest.name}")
    return found.group(1)


def _current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:  # a fresh database: no alembic_version table yet
        return None


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    # Config values go through configparser interpolation, hence the escaped '%'.
    config.set_main_option("script_location", str(_MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    command.upgrade(config, revision)
    if conn.in_transaction():
        conn.commit()


def _parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError("DATABASE_URL is not a valid database URL") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed
    if backend in ("postgresql", "postgres") and parsed.drivername in (
        "postgresql",
        "postgres",
        "postgresql+psycopg",
    ):
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(
        "DATABASE_URL must be sqlite:///path or postgresql://... (driver psycopg), "
        f"not {parsed.drivername!r}"
    )


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # A memory database lives in one connection (SingletonThreadPool): no pool sizing.
    # Last in, first out: a connection keeps its page cache only while no other one
    # writes, so the writes of one thread (the event loop's group commits) go on the
    # connection they used last. Taken in turn (the default), each commit found its
    # cache stale and read its pages again: ~6 preads per 4 KiB upload, now ~0.1 (with
    # WORKERS>1 each process's commits still make the other's cache stale).
    pooling: dict[str, Any] = (
        {} if in_memory else {"pool_size": 10, "max_overflow": 20, "pool_use_lifo": True}
    )
    engine = create_engine(url, json_deserializer=json_codec.loads, **pooling)
    syncer = sqlite_wal_syncer(engine)
    # NORMAL with the WAL syncer: COMMIT releases the write lock without an fsync and
    # the writer fsyncs the WAL before it answers (index/wal_sync.py says why that is
    # durable). FULL, where there is no plain file to sync: a committed transaction
    # survives power loss, which a 2xx promises.
    synchronous = "NORMAL" if syncer is not None else "FULL"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (the "begin" hook below) own BEGIN instead of sqlite3's
        # legacy implicit transactions, which never BEGIN before a SELECT.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            if syncer is not None:  # the syncer's thread checkpoints (wal_sync.py)
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get(SINGLE_STATEMENT_OPTION, False):
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION, False) else "BEGIN")

    if syncer is not None:
        _sync_writes_at_checkin(engine, syncer)
    return engine


def _sync_writes_at_checkin(engine: Engine, syncer: WalSyncer) -> None:
    """The net under every write path that does not sync itself (anything but the group
    committer): a connection that changed rows is synced when it returns to the pool,
    which `with engine.connect()` does before the caller goes on to answer."""

    @event.listens_for(engine, "close")
    def _on_close(_dbapi_connection: Any, _record: Any) -> None:
        syncer.forget()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info[_CHANGES_AT_CHECKOUT] = dbapi_connection.total_changes

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        before = record.info.pop(_CHANGES_AT_CHECKOUT, None)
        if record.info.pop(SYNCED_BY_CALLER, False) or before is None:
            return
        # An invalidated connection (None) may have committed before it failed.
        if dbapi_connection is None or dbapi_connection.total_changes != before:
            syncer.sync()
