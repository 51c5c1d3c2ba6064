"""Test data for the index suite, and a probe of blob reference counts."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from tfstorage.domain.records import NewVersion
from tfstorage.index import ObjectIndex
from tfstorage.index.tables import blobs, buckets, object_keys, versions


def new_version(
    bucket: str,
    key: str,
    data: bytes = b"data",
    *,
    content_type: str = "application/octet-stream",
    metadata: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    created_by: str = "tester",
) -> NewVersion:
    return NewVersion(
        bucket=bucket,
        key=key,
        blob_id=uuid.uuid4().hex,
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        metadata=metadata or {},
        tags=tags or {},
        created_by=created_by,
    )


def refcounts(index: ObjectIndex) -> dict[str, int]:
    """blob_id -> refcount, read straight from the table."""
    with index.engine.connect() as conn:
        rows = conn.execute(select(blobs.c.blob_id, blobs.c.refcount)).all()
    return {blob_id: count for blob_id, count in rows}


def bulk_keys(
    conn: Connection, bucket: str, count: int, *, trash_every: int, start: int = 0
) -> None:
    """`count` keys k{start:05d}... in `bucket` (which exists), one version each on one shared
    blob, every `trash_every`-th one trashed (0: none); inserted in bulk, for plan tests
    that need more rows than committing them one by one would make quickly."""
    now = datetime.now(UTC)
    bid = conn.execute(select(buckets.c.id).where(buckets.c.name == bucket)).scalar_one()
    blob_id = uuid.uuid4().hex
    conn.execute(
        insert(blobs).values(
            blob_id=blob_id, sha256=blob_id * 2, md5=blob_id, size=1, refcount=count, created_at=now
        )
    )
    conn.execute(
        insert(versions),
        [
            {
                "file_id": uuid.uuid4().hex,
                "bucket_id": bid,
                "key": f"k{i:05d}",
                "blob_id": blob_id,
                "size": i,
                "etag": blob_id,
                "sha256": blob_id * 2,
                "content_type": "application/octet-stream",
                "user_metadata": {},
                "created_at": now,
                "created_by": "bulk",
            }
            for i in range(start, start + count)
        ],
    )
    heads = conn.execute(
        select(versions.c.key, versions.c.id).where(
            versions.c.bucket_id == bid,
            versions.c.key.between(f"k{start:05d}", f"k{start + count - 1:05d}"),
        )
    ).all()
    conn.execute(
        insert(object_keys),
        [
            {
                "bucket_id": bid,
                "key": key,
                "current_id": seq,
                "deleted_at": now if trash_every and int(key[1:]) % trash_every == 0 else None,
            }
            for key, seq in heads
        ],
    )
