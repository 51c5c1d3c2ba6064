from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, event, inspect, select, text

import tfstorage.index
from tfstorage.domain.records import FileQuery
from tfstorage.errors import ConfigError, InvalidArgument
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.tables import buckets, metadata

TABLES = {"buckets", "blobs", "versions", "object_keys", "tags", "alembic_version"}


# The newest migration file's revision ("0002_access.py" -> "0002").
HEAD_REVISION = max(
    p.name.split("_")[0]
    for p in (Path(tfstorage.index.__file__).parent / "migrations" / "versions").glob("0*.py")
)


def test_migrate_is_idempotent(index: ObjectIndex) -> None:
    index.create_bucket("models")
    migrate(index.engine)
    migrate(index.engine)
    assert set(inspect(index.engine).get_table_names()) >= TABLES
    assert index.get_bucket("models").name == "models"


def test_head_revision_is_alembics_head() -> None:
    # migrate() skips Alembic when the database is at head_revision(): it must be the head
    # Alembic itself would upgrade to, or a start would skip a pending migration.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tfstorage.index.engine import head_revision

    config = Config()
    config.set_main_option(
        "script_location", str(Path(tfstorage.index.__file__).parent / "migrations")
    )
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_start_on_a_current_schema_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    code = (
        "import sys; from tfstorage.index import create_index_engine, migrate; "
        f"migrate(create_index_engine({url!r})); print('alembic' in sys.modules)"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True) for _ in "12"
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert [r.stdout.strip() for r in runs] == ["True", "False"]


def test_migrate_fresh_database_from_racing_processes(empty_url: str) -> None:
    # Instances starting together: separate processes, as in a deployment.
    code = "import sys; from tfstorage.index import create_index_engine, migrate; "
    code += "migrate(create_index_engine(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_url], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [
        (proc.wait(timeout=60), proc.stderr.read() if proc.stderr else b"") for proc in procs
    ]
    for proc in procs:
        if proc.stderr:
            proc.stderr.close()
    assert [code for code, _ in results] == [0, 0, 0], results
    engine = create_index_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        assert versions == [(HEAD_REVISION,)]
    finally:
        engine.dispose()


def test_migrate_from_threads(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()
    assert errors == []


def test_migration_matches_tables(index: ObjectIndex) -> None:
    with index.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'index.db'}")
    try:
        with engine.connect() as conn:
            values = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    # synchronous 1 is NORMAL: the WAL syncer fsyncs after COMMIT (tests/index/test_wal_sync.py)
    assert values == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }


def test_sqlite_writes_begin_immediate_and_reads_deferred(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    statements: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Connection, cursor: object, statement: str, *args: object) -> None:
        if statement.startswith("BEGIN"):
            statements.append(statement)

    index = ObjectIndex(engine)
    index.create_bucket("models")
    index.get_bucket("models")
    engine.dispose()
    assert statements == ["BEGIN IMMEDIATE", "BEGIN"]


def test_sqlite_write_lock_is_taken_at_begin(tmp_path: Path) -> None:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    try:
        with engine.connect() as conn:
            conn.execution_options(tfstorage_write=True)
            with conn.begin():
                # Nothing written yet, but a second writer must already be locked out.
                other = engine.raw_connection()
                try:
                    other.execute("PRAGMA busy_timeout=0")
                    with pytest.raises(Exception, match="locked"):
                        other.execute("BEGIN IMMEDIATE")
                finally:
                    other.close()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url", ["postgresql://u@db/x", "postgres://u@db/x", "postgresql+psycopg://u@db/x"]
)
def test_postgres_urls_use_psycopg(url: str) -> None:
    engine = create_index_engine(url)
    assert engine.dialect.name == "postgresql"
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@db/x", "postgresql+psycopg2://u@db/x", "::"])
def test_unsupported_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_index_engine(url)


def test_timestamps_are_stored_and_returned_as_utc(index: ObjectIndex) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    with index.engine.begin() as conn:
        conn.execute(
            buckets.insert().values(
                name="timed", created_at=moment, versioning=True, description=""
            )
        )
        stored = conn.execute(select(buckets.c.created_at)).scalar_one()
    assert stored == moment
    assert stored.tzinfo == UTC
    assert stored.hour == 12
    assert index.get_bucket("timed").created_at.tzinfo == UTC


def test_naive_datetimes_are_refused(index: ObjectIndex) -> None:
    with pytest.raises(InvalidArgument, match="time zone"):
        index.purge_deleted(datetime(2024, 1, 1))
    with pytest.raises(InvalidArgument, match="time zone"):
        index.search_files(FileQuery(created_after=datetime(2024, 1, 1)))


def test_ping(index: ObjectIndex) -> None:
    index.ping()
