"""The hot version reads in one SQL statement each: a key's latest version (what every
GET and HEAD reads) and a version by its seq (what every commit answers with).

Bucket, head, version, blob and tags come back together (a row per tag), so the
latest read needs no transaction around it: one statement sees one snapshot on both databases
(`IndexStore._read_statement`). The statement is built once; SQLAlchemy then finds its
compiled form by a memoized cache key, and the driver reuses its prepared statement
(sqlite3's statement cache, psycopg's automatic prepare).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import Connection, Dialect, Select, and_, bindparam, select

from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import NoSuchBucket, NoSuchKey
from tfstorage.index.driver import driver_of, driver_query
from tfstorage.index.reads import version_columns, version_of
from tfstorage.index.tables import blobs, buckets, object_keys, tags, versions


def _statement() -> Select[Any]:
    # Outer joins from the bucket: no row at all means no bucket, a row without a
    # version means no such key.
    head = and_(object_keys.c.bucket_id == buckets.c.id, object_keys.c.key == bindparam("key"))
    return (
        select(*version_columns(), tags.c.key.label("tag_key"), tags.c.value.label("tag_value"))
        .select_from(
            buckets.outerjoin(object_keys, head)
            .outerjoin(versions, versions.c.id == object_keys.c.current_id)
            .outerjoin(blobs, blobs.c.blob_id == versions.c.blob_id)
            .outerjoin(tags, tags.c.version_id == versions.c.id)
        )
        .where(buckets.c.name == bindparam("bucket"))
    )


def _by_seq_statement() -> Select[Any]:
    head = and_(
        object_keys.c.bucket_id == versions.c.bucket_id, object_keys.c.key == versions.c.key
    )
    return (
        select(*version_columns(), tags.c.key.label("tag_key"), tags.c.value.label("tag_value"))
        .select_from(
            versions.join(buckets, buckets.c.id == versions.c.bucket_id)
            .join(blobs, blobs.c.blob_id == versions.c.blob_id)
            .outerjoin(object_keys, head)
            .outerjoin(tags, tags.c.version_id == versions.c.id)
        )
        .where(versions.c.id == bindparam("seq"))
    )


_LATEST: Final = _statement()
_BY_SEQ: Final = _by_seq_statement()


def read_latest(conn: Connection, bucket: str, key: str) -> ObjectVersion:
    """The key's live head; NoSuchBucket, or NoSuchKey when absent or in the trash."""
    rows = conn.execute(_LATEST, {"bucket": bucket, "key": key}).all()
    if not rows:
        raise NoSuchBucket(bucket)
    if rows[0].id is None or rows[0].deleted_at is not None:
        raise NoSuchKey(bucket, key)
    return _with_tags(rows)


def read_version(conn: Connection, seq: int) -> ObjectVersion | None:
    """The version with this seq, or None."""
    driver = driver_of(conn)
    if driver is not None:  # what every commit answers with, in its transaction
        rows: Sequence[Any] = driver_query(_BY_SEQ, conn.dialect).rows(driver, seq=seq)
    else:
        rows = conn.execute(_BY_SEQ, {"seq": seq}).all()
    return _with_tags(rows) if rows else None


def read_latest_on_driver(
    driver: sqlite3.Connection, dialect: Dialect, bucket: str, key: str
) -> ObjectVersion:
    """`read_latest` on SQLite's driver connection (index/driver.py says why): what
    GET and HEAD read. Same answers, same errors."""
    rows = driver_query(_LATEST, dialect).rows(driver, bucket=bucket, key=key)
    if not rows:
        raise NoSuchBucket(bucket)
    if rows[0].id is None or rows[0].deleted_at is not None:
        raise NoSuchKey(bucket, key)
    return _with_tags(rows)


def _with_tags(rows: Sequence[Any]) -> ObjectVersion:
    tag_map = {row.tag_key: row.tag_value for row in rows if row.tag_key is not None}
    return version_of(rows[0], tag_map)
