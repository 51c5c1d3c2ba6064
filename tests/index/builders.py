"""Test data for the index suite, and a probe of blob reference counts."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import select

from tfstorage.domain.records import NewVersion
from tfstorage.index import ObjectIndex
from tfstorage.index.tables import blobs


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
