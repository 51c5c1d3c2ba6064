"""The latest version of a key in one SQL statement: the read every GET and HEAD makes.

Bucket, head, version, blob and tags come back together (a row per tag), so the read
needs no transaction around it: one statement sees one snapshot on both databases
(`IndexStore._read_statement`). The statement is built once; SQLAlchemy then finds its
compiled form by a memoized cache key, and the driver reuses its prepared statement
(sqlite3's statement cache, psycopg's automatic prepare).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, Select, and_, bindparam, select

from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import NoSuchBucket, NoSuchKey
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


_LATEST: Final = _statement()


def read_latest(conn: Connection, bucket: str, key: str) -> ObjectVersion:
    """The key's live head; NoSuchBucket, or NoSuchKey when absent or in the trash."""
    rows = conn.execute(_LATEST, {"bucket": bucket, "key": key}).all()
    if not rows:
        raise NoSuchBucket(bucket)
    first = rows[0]
    if first.id is None or first.deleted_at is not None:
        raise NoSuchKey(bucket, key)
    tag_map = {row.tag_key: row.tag_value for row in rows if row.tag_key is not None}
    return version_of(first, tag_map)
