"""Many object changes in one index transaction, each one on its own.

A batch commits in one transaction (one COMMIT, one fsync) for speed, but each item runs
inside its own SAVEPOINT: one refused (a quota, a key deleted meanwhile) is rolled back
alone and reported, and the others still commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, insert, select

from tfstorage.domain.categories import key_category
from tfstorage.domain.conditions import ANY, WriteCondition
from tfstorage.domain.ids import uuid4_hex
from tfstorage.domain.object_lock import VersionLock
from tfstorage.domain.records import CommitResult, NewVersion, ObjectVersion
from tfstorage.errors import NoSuchKey, PreconditionFailed, StorageError
from tfstorage.index import writes
from tfstorage.index.reads import (
    block_columns,
    bucket_id,
    chunks,
    fetch_by_ids,
    keep_block_columns,
    upsert,
    utcnow,
)
from tfstorage.index.tables import blobs, buckets, object_keys, tags, versions
from tfstorage.index.transactions import IndexStore

_I = TypeVar("_I")
_R = TypeVar("_R")


def each_in_savepoint(
    conn: Connection, items: Sequence[_I], work: Callable[[Connection, _I], _R]
) -> list[_R | StorageError]:
    out: list[_R | StorageError] = []
    for item in items:
        savepoint = conn.begin_nested()
        try:
            result = work(conn, item)
        except StorageError as exc:
            savepoint.rollback()
            out.append(exc)
        else:
            savepoint.commit()
            out.append(result)
    return out


def commit_each(conn: Connection, news: Sequence[NewVersion]) -> list[CommitResult | StorageError]:
    """New versions, each on its own; in bulk (a few statements for the whole batch)
    where nothing can refuse one of them alone: one versioned bucket without a quota,
    distinct keys. Otherwise each goes through `writes.commit_version` in a savepoint."""
    if _bulk_eligible(conn, news):
        savepoint = conn.begin_nested()
        try:
            results: list[CommitResult | StorageError] = list(_commit_bulk(conn, news))
        except StorageError as exc:  # the bucket itself (gone meanwhile): every one fails
            savepoint.rollback()
            return [exc] * len(news)
        savepoint.commit()
        return results
    return each_in_savepoint(conn, news, writes.commit_version)


def _bulk_eligible(conn: Connection, news: Sequence[NewVersion]) -> bool:
    if len(news) < 2 or len({n.bucket for n in news}) != 1:
        return False
    if any(n.condition is not None for n in news):
        return False  # a precondition can refuse one alone
    if len({n.key for n in news}) != len(news):
        return False
    settings = conn.execute(
        select(
            buckets.c.quota_bytes,
            buckets.c.quota_objects,
            buckets.c.versioning,
            buckets.c.object_lock,
        ).where(buckets.c.name == news[0].bucket)
    ).first()
    return (
        settings is not None
        and settings.versioning
        and settings.object_lock is None  # default retention: commit_version applies it
        and settings.quota_bytes is None
        and settings.quota_objects is None
    )


def _commit_bulk(conn: Connection, news: Sequence[NewVersion]) -> list[CommitResult]:
    """What `writes.commit_version` does for each, as executemany statements."""
    bid = bucket_id(conn, news[0].bucket, lock="share")
    now = utcnow()
    # Blobs: one row per distinct sha256 (a batch may hold the same bytes twice), taking
    # as many references as versions get it; in sha256 order, a stable lock order.
    per_sha: dict[str, list[NewVersion]] = {}
    for new in news:
        per_sha.setdefault(new.sha256, []).append(new)
    blob_rows = [
        {
            "blob_id": group[0].blob_id,
            "sha256": sha,
            "md5": group[0].md5,
            "size": group[0].size,
            "refcount": len(group),
            "created_at": now,
            **block_columns(group[0].blocks),
        }
        for sha, group in sorted(per_sha.items())
    ]
    stmt = upsert(conn, blobs)
    stmt = stmt.on_conflict_do_update(
        index_elements=[blobs.c.sha256],
        set_={"refcount": blobs.c.refcount + stmt.excluded.refcount, **keep_block_columns(stmt)},
    )
    conn.execute(stmt, blob_rows)
    stored: dict[str, str] = {}
    for batch in chunks(sorted(per_sha)):
        found = select(blobs.c.sha256, blobs.c.blob_id).where(blobs.c.sha256.in_(batch))
        stored.update({sha: blob_id for sha, blob_id in conn.execute(found)})
    file_ids = [uuid4_hex() for _ in news]
    conn.execute(
        insert(versions),
        [
            {
                "file_id": file_id,
                "bucket_id": bid,
                "key": new.key,
                "blob_id": stored[new.sha256],
                "size": new.size,
                "etag": new.md5,
                "sha256": new.sha256,
                "content_type": new.content_type,
                "category": key_category(new.key, new.content_type),  # statistics (issue 6)
                "user_metadata": dict(new.metadata),
                "content_headers": dict(new.content_headers) if new.content_headers else None,
                "created_at": now,
                "created_by": new.created_by,
            }
            for new, file_id in zip(news, file_ids, strict=True)
        ],
    )
    seqs: dict[str, int] = {}
    for batch in chunks(file_ids):
        found = select(versions.c.file_id, versions.c.id).where(versions.c.file_id.in_(batch))
        seqs.update({file_id: int(seq) for file_id, seq in conn.execute(found)})
    tag_rows = [
        {"version_id": seqs[file_id], "key": k, "value": v}
        for new, file_id in zip(news, file_ids, strict=True)
        for k, v in new.tags.items()
    ]
    if tag_rows:
        conn.execute(insert(tags), tag_rows)
    # Heads, in key order; only a newer seq moves one (as writes._advance_head).
    head = upsert(conn, object_keys)
    head = head.on_conflict_do_update(
        index_elements=[object_keys.c.bucket_id, object_keys.c.key],
        set_={"current_id": head.excluded.current_id, "deleted_at": None},
        where=object_keys.c.current_id < head.excluded.current_id,
    )
    head_rows = sorted(
        (
            {"bucket_id": bid, "key": new.key, "current_id": seqs[file_id], "deleted_at": None}
            for new, file_id in zip(news, file_ids, strict=True)
        ),
        key=lambda row: str(row["key"]),
    )
    conn.execute(head, head_rows)
    made = fetch_by_ids(conn, list(seqs.values()))
    return [
        CommitResult(
            version=made[seqs[file_id]],
            duplicate_blob_id=None if stored[new.sha256] == new.blob_id else new.blob_id,
        )
        for new, file_id in zip(news, file_ids, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class CopyItem:
    """Make a new version of `dest_key` sharing the bytes of `source`."""

    source: ObjectVersion
    dest_bucket: str
    dest_key: str
    overwrite: bool
    created_by: str
    # What the copy carries instead of the source's (None: the source's own).
    metadata: dict[str, Any] | None = None
    tags: dict[str, str] | None = None
    content_type: str | None = None
    lock: VersionLock | None = None  # S3 CopyObject's x-amz-object-lock-* headers
    content_headers: dict[str, str] | None = None


def copy_version(conn: Connection, item: CopyItem) -> CommitResult | None:
    """The copy, or None when the destination exists and may not be overwritten."""
    src = item.source
    # KEY SHARE on the source: a concurrent delete of it waits until the copy holds its
    # own reference on the blob, so the blob cannot be collected in between.
    locked = select(versions.c.id).where(versions.c.id == src.seq)
    if conn.execute(locked.with_for_update(read=True, key_share=True)).first() is None:
        raise NoSuchKey(src.bucket, src.key)
    # The same sha256 as a stored blob: commit_version takes a reference on it (the
    # dedup path), with the destination bucket's quota and versioning applied.
    new = NewVersion(
        bucket=item.dest_bucket,
        key=item.dest_key,
        blob_id=src.blob_id,
        size=src.size,
        md5=src.etag,
        sha256=src.sha256,
        content_type=item.content_type or src.content_type,
        metadata=dict(src.metadata if item.metadata is None else item.metadata),
        tags=dict(src.tags if item.tags is None else item.tags),
        created_by=item.created_by,
        # No overwrite: create only if absent, decided on the locked head (a key in
        # the trash counts as absent), so a concurrent writer cannot slip in between.
        condition=None if item.overwrite else WriteCondition(if_none_match=ANY),
        lock=item.lock,
        content_headers=dict(
            src.content_headers if item.content_headers is None else item.content_headers
        ),
    )
    try:
        with conn.begin_nested():  # rolled back on any error, the 412 included
            return writes.commit_version(conn, new)
    except PreconditionFailed:
        return None


class BatchIndex(IndexStore):
    def copy_versions(self, items: Sequence[CopyItem]) -> list[CommitResult | StorageError | None]:
        return self._write(lambda conn: each_in_savepoint(conn, items, copy_version))
