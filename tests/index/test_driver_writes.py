"""The upload's three write statements run on SQLite's driver connection (index/driver.py,
DriverWrite): they must store exactly what SQLAlchemy stores for the same values, byte
for byte in SQLite's columns, and take part in the transaction SQLAlchemy began."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, Insert

from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.driver import DriverWrite, driver_of
from tfstorage.index.writes import _VERSION_INSERT, _blob_upsert, _head_upsert

from .builders import new_version

pytestmark = pytest.mark.timeout(60)

WHEN = datetime(2026, 12, 6, 18, 22, 26, 123456, tzinfo=UTC)
BLOB_ID = "b" * 32


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """Bucket 1 holding versions 1..9 (keys v1..v9) of one blob, BLOB_ID."""
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    index = ObjectIndex(engine)
    index.create_bucket("b")
    for n in range(1, 10):
        committed = index.commit_version(replace(new_version("b", f"v{n}"), blob_id=BLOB_ID))
        assert committed.version.blob_id == BLOB_ID
    yield engine
    engine.dispose()


def both_ways(
    conn: Connection, statement: Insert, values: dict[str, Any], other: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """`statement` through SQLAlchemy with `values`, and on the driver with `values | other`."""
    driver = driver_of(conn)
    assert isinstance(driver, sqlite3.Connection)
    result = conn.execute(statement, values)
    through = result.all() if result.returns_rows else []
    direct = DriverWrite(statement, conn.dialect).run(driver, values | other)
    return through, direct


def stored(conn: Connection, table: str, column: str, value: object) -> dict[str, Any]:
    """A row as SQLite holds it (no conversion on the way out)."""
    cursor = conn.exec_driver_sql(f"SELECT * FROM {table} WHERE {column} = ?", (value,))
    names = [d[0] for d in cursor.cursor.description]
    row = cursor.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


VERSIONS = [
    {"user_metadata": {}, "part_sizes": None, "content_headers": None, "unversioned": False},
    {
        "user_metadata": {"zeta": 1, "alpha": ["x", 2.5, None], "ünï": {"b": True}},
        "part_sizes": [8388608, 8388608, 17],
        "content_headers": {"cache-control": "no-store"},
        "unversioned": True,
    },
]


@pytest.mark.parametrize("extra", VERSIONS)
def test_a_version_row_is_stored_alike(engine: Engine, extra: dict[str, Any]) -> None:
    row = {
        "file_id": "a" * 32,
        "bucket_id": 1,
        "key": "sa/k",
        "blob_id": BLOB_ID,
        "size": 3,
        "etag": "c" * 32,
        "sha256": "d" * 64,
        "content_type": "application/x-thing",
        "category": "models",
        "created_at": WHEN,
        "created_by": "admin",
        "parts_etag": None,
        **extra,
    }
    with engine.connect() as conn, conn.begin():
        through, direct = both_ways(
            conn, _VERSION_INSERT, row, {"file_id": "e" * 32, "key": "driver/k"}
        )
        a = stored(conn, "versions", "id", through[0][0])
        b = stored(conn, "versions", "id", direct[0][0])
    assert direct[0][0] == through[0][0] + 1
    for differs in ("id", "file_id", "key"):
        del a[differs], b[differs]
    assert a == b


def test_the_blob_upsert_inserts_and_counts_references_alike(engine: Engine) -> None:
    statement = _blob_upsert("sqlite")
    row = {
        "blob_id": "1" * 32,
        "sha256": "2" * 64,
        "md5": "3" * 32,
        "size": 3,
        "created_at": WHEN,
        "block_size": 1048576,
        "block_crc32c": b"\x00\x01\x02\x03",
    }
    other = {"blob_id": "4" * 32, "sha256": "5" * 64}
    with engine.connect() as conn, conn.begin():
        through, direct = both_ways(conn, statement, row, other)
        assert (through[0][0], direct[0][0]) == (row["blob_id"], other["blob_id"])
        a, b = (
            stored(conn, "blobs", "sha256", row["sha256"]),
            stored(conn, "blobs", "sha256", other["sha256"]),
        )
        # The same content again (dedup): the stored blob's id comes back, one more reference.
        again = {"blob_id": "6" * 32, "block_size": None, "block_crc32c": None}
        through, direct = both_ways(conn, statement, row | again, other | again)
        assert (through[0][0], direct[0][0]) == (row["blob_id"], other["blob_id"])
        a2, b2 = (
            stored(conn, "blobs", "sha256", row["sha256"]),
            stored(conn, "blobs", "sha256", other["sha256"]),
        )
    for differs in ("blob_id", "sha256"):
        for r in (a, b, a2, b2):
            del r[differs]
    assert a == b and a2 == b2
    assert (a["refcount"], a2["refcount"]) == (1, 2)
    assert a2["block_crc32c"] == b"\x00\x01\x02\x03"  # kept on a dedup hit


def test_the_head_upsert_moves_only_to_a_newer_version(engine: Engine) -> None:
    statement = _head_upsert("sqlite")
    with engine.connect() as conn, conn.begin():
        for seq, expected in ((5, 5), (3, 5), (9, 9)):  # versions of the fixture
            both_ways(
                conn, statement, {"bucket_id": 1, "key": "sa", "current_id": seq}, {"key": "dr"}
            )
            a = stored(conn, "object_keys", "key", "sa")
            b = stored(conn, "object_keys", "key", "dr")
            assert a["current_id"] == b["current_id"] == expected
            assert a["deleted_at"] is None and b["deleted_at"] is None


def test_driver_writes_roll_back_with_the_transaction(engine: Engine) -> None:
    statement = _head_upsert("sqlite")
    with engine.connect() as conn:
        transaction = conn.begin()
        driver = driver_of(conn)
        assert driver is not None
        DriverWrite(statement, conn.dialect).run(
            driver, {"bucket_id": 1, "key": "k", "current_id": 1}
        )
        transaction.rollback()
        gone = conn.exec_driver_sql("SELECT count(*) FROM object_keys WHERE key = 'k'")
        assert gone.scalar() == 0


def test_statements_it_cannot_run_are_refused_when_built(engine: Engine) -> None:
    from sqlalchemy import bindparam, insert

    from tfstorage.index.tables import object_keys

    expanding = insert(object_keys).values(
        bucket_id=bindparam("b", expanding=True), key="k", current_id=1
    )
    with pytest.raises(ValueError), engine.connect() as conn:
        DriverWrite(expanding, conn.dialect)
