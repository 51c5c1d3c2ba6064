"""Statements that change versions, heads and blob reference counts.

Lock order on PostgreSQL, kept the same everywhere a deadlock could otherwise form:
bucket row -> version row -> blob row -> head row (object_keys). SQLite needs none of
this: BEGIN IMMEDIATE lets one writer in at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from tfstorage.domain.categories import key_category
from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.ids import uuid4_hex
from tfstorage.domain.object_lock import ObjectLockConfig, VersionLock
from tfstorage.domain.records import CommitResult, NewVersion, ObjectVersion
from tfstorage.domain.uploads import PartLayout
from tfstorage.errors import (
    InternalError,
    InvalidRequest,
    NoSuchBucket,
    NoSuchKey,
    NoSuchVersion,
    QuotaExceeded,
)
from tfstorage.index import json_codec
from tfstorage.index.conditions import check_head, place_head
from tfstorage.index.driver import (
    first_row,
    insert_returning,
    insert_returning_row,
    run_write,
    scalars,
)
from tfstorage.index.latest import read_version
from tfstorage.index.locks import db_now, is_locked, refuse_locked
from tfstorage.index.reads import (
    block_columns,
    bucket_id,
    chunks,
    keep_block_columns,
    utcnow,
    version_of,
)
from tfstorage.index.tables import blobs, buckets, object_keys, tags, versions
from tfstorage.index.usage import bucket_live

# "Not read yet" for a bucket column a caller may pass along (None is a stored value).
_UNREAD: Any = object()
# Keys per statement when purging: two bound parameters each.
_PURGE_BATCH = 200


def commit_version(conn: Connection, new: NewVersion) -> CommitResult:
    settings = first_row(conn, _BUCKET_SETTINGS, name=new.bucket)
    if settings is None:
        raise NoSuchBucket(new.bucket)
    limited = settings.quota_bytes is not None or settings.quota_objects is not None
    if conn.dialect.name == "sqlite":
        bid = int(settings.id)  # BEGIN IMMEDIATE already keeps every other writer out
    else:
        # A quota is checked against what the bucket holds, so commits to a bucket with
        # one take its row exclusively: two of them cannot both pass the check. Others
        # take it shared, so the bucket cannot be deleted under them.
        bid = bucket_id(conn, new.bucket, lock="update" if limited else "share")
    now = utcnow()
    # Dedup in one statement: take a reference on the stored blob with this sha256, or
    # record ours. Unlike UPDATE-then-INSERT this never fails on a concurrent insert of
    # the same sha256 (PostgreSQL waits for it, then updates), so it needs no retry; and
    # a concurrent `DELETE ... WHERE refcount = 0` either sees our increment and keeps
    # the row, or removes it first and we insert ours.
    row = {
        "blob_id": new.blob_id,
        "sha256": new.sha256,
        "md5": new.md5,
        "size": new.size,
        "created_at": now,
        **block_columns(new.blocks),
    }
    # With the stored blob's damage mark: a reused blob may carry one (_as_written).
    stored, damage = insert_returning_row(conn, _blob_upsert(conn.dialect.name), row)
    condition = new.condition
    # Judged before the version takes its seq, with the head locked (index/conditions.py).
    head = None if condition is None else check_head(conn, bid, new.key, condition)
    if limited:  # after the precondition: a 412 comes first
        _check_quota(conn, bid, new.bucket, new.key, new.size, settings)
    unversioned = not settings.versioning
    written: dict[str, Any] = {}
    seq = _insert_version(
        conn,
        bucket_id=bid,
        key=new.key,
        blob_id=stored,
        size=new.size,
        etag=new.md5,
        sha256=new.sha256,
        content_type=new.content_type,
        metadata=new.metadata,
        tag_map=new.tags,
        created_by=new.created_by,
        now=now,
        parts=new.parts,
        lock=new.lock,
        content_headers=new.content_headers,
        unversioned=unversioned,
        object_lock=settings.object_lock,
        written=written,
    )
    if condition is None:
        _advance_head(conn, bid, new.key, seq)
    else:
        place_head(conn, bid, new.key, seq, condition, head)
    if unversioned:
        # S3's "null" version: an unversioned write replaces the key's previous one, and
        # only it; versions written while versioning was on stay. Looked up first: a new
        # key (most writes) has none, and the lock check and removal are five statements.
        older_ids = scalars(conn, _OLDER_NULL_VERSIONS, bid=bid, key=new.key, seq=seq)
        if older_ids:
            older = versions.c.id.in_(older_ids)
            refuse_locked(conn, older, "overwrite")  # rolls the new version back too
            remove_versions(conn, older, heads=false())  # the head is the new version: kept
    duplicate = None if stored == new.blob_id else new.blob_id
    if conn.dialect.name == "sqlite":
        version = _as_written(new, seq, damage, written)
    else:
        version = _by_seq(conn, seq)
    return CommitResult(version=version, duplicate_blob_id=duplicate)


def _as_written(
    new: NewVersion, seq: int, damage: str | None, row: Mapping[str, Any]
) -> ObjectVersion:
    """The version just committed, from what was written rather than read back (one
    statement, its row decoded, per upload), made by the same `version_of` as a read.
    On SQLite only, whose one writer at a time makes `seq` the key's head: on
    PostgreSQL a newer seq of the key may have committed first.
    tests/index/test_written_version.py compares it with the read, field by field."""
    metadata = row["user_metadata"]
    as_read = SimpleNamespace(
        **_NO_LOCK
        | dict(row)
        | {
            "id": seq,
            "bucket_name": new.bucket,
            # As the index's JSON gives it back (keys sorted, a tuple become a list).
            "user_metadata": json_codec.loads(json_codec.dumps(metadata)) if metadata else {},
            "current_id": seq,  # the key's head: no newer seq exists
            "deleted_at": None,
            "damage": damage,
        }
    )
    return version_of(as_read, dict(new.tags))


# The lock columns of a version that took no lock, as a read gives them.
_NO_LOCK: dict[str, Any] = {"retain_until": None, "retention_mode": None, "legal_hold": False}


def null_versions(bid: int, key: str) -> ColumnElement[bool]:
    """The key's version written unversioned (S3's "null" version); at most one stays."""
    return (versions.c.bucket_id == bid) & (versions.c.key == key) & versions.c.unversioned


def _check_quota(conn: Connection, bid: int, bucket: str, key: str, size: int, limits: Any) -> None:
    """Refuse making `key` a live object of `size` bytes if the bucket's quota would break."""
    max_bytes, max_objects = limits.quota_bytes, limits.quota_objects
    objects, used = bucket_live(conn, bid)  # the usage counters: O(1), not a scan
    replaced = conn.execute(
        select(versions.c.size)
        .select_from(object_keys)
        .join(versions, versions.c.id == object_keys.c.current_id)
        .where(
            object_keys.c.bucket_id == bid,
            object_keys.c.key == key,
            object_keys.c.deleted_at.is_(None),
        )
    ).scalar_one_or_none()
    if replaced is None:
        objects, used = objects + 1, used + size
    else:  # an overwrite replaces the live object's bytes
        used = used - replaced + size
    if max_objects is not None and objects > max_objects:
        raise QuotaExceeded(f"bucket {bucket!r} may hold at most {max_objects} objects")
    if max_bytes is not None and used > max_bytes:
        raise QuotaExceeded(f"bucket {bucket!r} may hold at most {max_bytes} bytes")


def check_restore_quota(conn: Connection, bid: int, key: str, size: int) -> None:
    """A restore makes an object live again: the same quota as an upload applies."""
    limits = conn.execute(
        select(buckets.c.name, buckets.c.quota_bytes, buckets.c.quota_objects)
        .where(buckets.c.id == bid)
        .with_for_update()
    ).one()
    if limits.quota_bytes is not None or limits.quota_objects is not None:
        _check_quota(conn, bid, limits.name, key, size, limits)


def restore_version(
    conn: Connection, file_id: str, created_by: str, condition: WriteCondition | None = None
) -> CommitResult:
    src = conn.execute(select(versions).where(versions.c.file_id == file_id)).first()
    if src is None:
        raise NoSuchVersion(file_id)
    versioning = conn.execute(
        select(buckets.c.versioning)
        .where(buckets.c.id == src.bucket_id)
        .with_for_update(read=True, key_share=True)
    ).scalar_one()
    # KEY SHARE: a concurrent delete_version of the source waits until we hold our own
    # reference on its blob; re-read in case it was deleted before we got the lock.
    locked = select(versions.c.id).where(versions.c.id == src.id)
    if conn.execute(locked.with_for_update(read=True, key_share=True)).first() is None:
        raise NoSuchVersion(file_id)
    check_restore_quota(conn, src.bucket_id, src.key, src.size)
    _add_reference(conn, src.blob_id)
    head = None if condition is None else check_head(conn, src.bucket_id, src.key, condition)
    old_tags = conn.execute(select(tags.c.key, tags.c.value).where(tags.c.version_id == src.id))
    seq = _insert_version(
        conn,
        bucket_id=src.bucket_id,
        key=src.key,
        blob_id=src.blob_id,
        size=src.size,
        etag=src.etag,
        sha256=src.sha256,
        content_type=src.content_type,
        metadata=dict(src.user_metadata or {}),
        tag_map={key: value for key, value in old_tags},
        created_by=created_by,
        now=utcnow(),
        content_headers=src.content_headers,
        # Unversioned, the next write replaces it as it would have before revision 0018.
        unversioned=not versioning,
    )
    if condition is None:
        _advance_head(conn, src.bucket_id, src.key, seq)
    else:
        place_head(conn, src.bucket_id, src.key, seq, condition, head)
    return CommitResult(version=_by_seq(conn, seq), duplicate_blob_id=None)


def delete_version(
    conn: Connection, file_id: str, *, bypass_governance: bool = False
) -> ObjectVersion:
    # FOR UPDATE first: two deletes of one version must not both drop a reference.
    stmt = select(versions.c.id, versions.c.bucket_id, versions.c.key, versions.c.blob_id)
    row = conn.execute(stmt.where(versions.c.file_id == file_id).with_for_update()).first()
    if row is None:
        raise NoSuchVersion(file_id)
    refuse_locked(conn, versions.c.id == row.id, bypass_governance=bypass_governance)
    before = _by_seq(conn, row.id)
    _drop_reference(conn, row.blob_id)
    head_of_key = (object_keys.c.bucket_id == row.bucket_id) & (object_keys.c.key == row.key)
    head = conn.execute(
        select(object_keys.c.current_id).where(head_of_key).with_for_update()
    ).scalar_one_or_none()
    if head == row.id:
        newest = conn.execute(
            select(func.max(versions.c.id)).where(
                versions.c.bucket_id == row.bucket_id,
                versions.c.key == row.key,
                versions.c.id != row.id,
            )
        ).scalar_one_or_none()
        if newest is None:
            conn.execute(delete(object_keys).where(head_of_key))
        else:
            conn.execute(update(object_keys).where(head_of_key).values(current_id=newest))
    conn.execute(delete(tags).where(tags.c.version_id == row.id))
    conn.execute(delete(versions).where(versions.c.id == row.id))
    return before


def update_version(
    conn: Connection,
    file_id: str,
    *,
    metadata: Mapping[str, Any] | None,
    tag_map: Mapping[str, str] | None,
    content_type: str | None,
) -> ObjectVersion:
    stmt = select(versions.c.id, versions.c.key).where(versions.c.file_id == file_id)
    row = conn.execute(stmt.with_for_update()).first()
    if row is None:
        raise NoSuchVersion(file_id)
    seq = row.id
    values: dict[str, Any] = {}
    if metadata is not None:
        values["user_metadata"] = dict(metadata)
    if content_type is not None:
        values["content_type"] = content_type
        values["category"] = key_category(row.key, content_type)
    if values:
        conn.execute(update(versions).where(versions.c.id == seq).values(**values))
    if tag_map is not None:
        conn.execute(delete(tags).where(tags.c.version_id == seq))
        _insert_tags(conn, seq, tag_map)
    return _by_seq(conn, seq)


def set_deleted(
    conn: Connection,
    bucket: str,
    key: str,
    deleted_at: datetime | None,
    condition: WriteCondition | None = None,
) -> int:
    """Soft delete (a time) or restore (None) a key's head; returns the head's seq."""
    bid = bucket_id(conn, bucket)
    if condition is not None:
        check_head(conn, bid, key, condition)
    stmt = update(object_keys).where(object_keys.c.bucket_id == bid, object_keys.c.key == key)
    if deleted_at is not None:
        stmt = stmt.where(object_keys.c.deleted_at.is_(None))
    head = conn.execute(
        stmt.values(deleted_at=deleted_at).returning(object_keys.c.current_id)
    ).scalar_one_or_none()
    if head is None:
        raise NoSuchKey(bucket, key)
    return int(head)


def delete_null_and_hide(conn: Connection, bucket: str, key: str) -> ObjectVersion:
    """S3's DELETE in a bucket with versioning suspended: the key's "null" version goes
    for good (S3's null delete marker replaces it) and the key goes to the trash, its
    versions written while versioning was on kept (a key in the trash already stays
    there). Returns the key's head, else the version removed; NoSuchKey when the key had
    neither."""
    bid = bucket_id(conn, bucket)
    null = conn.execute(select(versions.c.file_id).where(null_versions(bid, key)))
    file_id = null.scalar_one_or_none()
    removed = None if file_id is None else delete_version(conn, file_id)
    head = select(object_keys.c.current_id).where(
        object_keys.c.bucket_id == bid, object_keys.c.key == key
    )
    trashed = conn.execute(head.where(object_keys.c.deleted_at.is_not(None))).scalar()
    if trashed is not None:
        return _by_seq(conn, trashed)
    try:
        return _by_seq(conn, set_deleted(conn, bucket, key, utcnow()))
    except NoSuchKey:
        if removed is None:
            raise
        return removed


def remove_versions(
    conn: Connection, where: ColumnElement[bool], heads: ColumnElement[bool]
) -> int:
    """Delete the versions matching `where` and the heads matching `heads`."""
    per_blob = (
        select(func.count())
        .select_from(versions)
        .where(versions.c.blob_id == blobs.c.blob_id, where)
        .scalar_subquery()
    )
    conn.execute(
        update(blobs)
        .where(blobs.c.blob_id.in_(select(versions.c.blob_id).where(where)))
        .values(refcount=blobs.c.refcount - per_blob)
    )
    conn.execute(delete(object_keys).where(heads))
    conn.execute(delete(tags).where(tags.c.version_id.in_(select(versions.c.id).where(where))))
    return conn.execute(delete(versions).where(where)).rowcount


def purge_deleted(conn: Connection, before: datetime, limit: int) -> int:
    # SKIP LOCKED (PostgreSQL): purgers on several instances take disjoint keys. The
    # head locks keep commits to these keys from landing while we delete; taking them
    # before the blob rows breaks the lock order, so a rare deadlock with a commit is
    # possible and ObjectIndex retries it.
    # Keys holding a locked version stay in the trash until the lock ends.
    locked = (
        select(versions.c.id)
        .where(
            versions.c.bucket_id == object_keys.c.bucket_id,
            versions.c.key == object_keys.c.key,
            is_locked(db_now(conn)),
        )
        .exists()
    )
    stmt = (
        select(object_keys.c.bucket_id, object_keys.c.key)
        .where(object_keys.c.deleted_at < before, ~locked)
        .order_by(object_keys.c.deleted_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    keys = [(row.bucket_id, row.key) for row in conn.execute(stmt)]
    removed = 0
    for batch in chunks(keys, _PURGE_BATCH):
        removed += remove_versions(
            conn,
            tuple_(versions.c.bucket_id, versions.c.key).in_(batch),
            tuple_(object_keys.c.bucket_id, object_keys.c.key).in_(batch),
        )
    return removed


def claim_unreferenced_blobs(conn: Connection, limit: int) -> list[str]:
    candidates = select(blobs.c.blob_id).where(blobs.c.refcount == 0).limit(limit)
    # refcount is checked again on the row itself: PostgreSQL re-evaluates it after
    # waiting for a commit that was taking a reference, and then keeps the row.
    stmt = (
        delete(blobs)
        .where(blobs.c.blob_id.in_(candidates), blobs.c.refcount == 0)
        .returning(blobs.c.blob_id)
    )
    return list(conn.execute(stmt).scalars())


def _insert_version(
    conn: Connection,
    *,
    bucket_id: int,
    key: str,
    blob_id: str,
    size: int,
    etag: str,
    sha256: str,
    content_type: str,
    metadata: Mapping[str, Any],
    tag_map: Mapping[str, str],
    created_by: str,
    now: datetime,
    parts: PartLayout | None = None,
    lock: VersionLock | None = None,
    content_headers: Mapping[str, str] | None = None,
    unversioned: bool = False,
    object_lock: Any = _UNREAD,
    written: dict[str, Any] | None = None,
) -> int:
    """Insert the version (and its tags and lock); `object_lock` is the bucket's stored
    lock configuration when the caller already read it in this transaction. `written`,
    if given, receives the inserted row and the lock columns set."""
    row = {
        "file_id": uuid4_hex(),
        "bucket_id": bucket_id,
        "key": key,
        "blob_id": blob_id,
        "size": size,
        "etag": etag,
        "sha256": sha256,
        "content_type": content_type,
        "category": key_category(key, content_type),  # for the statistics (issue 6)
        "user_metadata": dict(metadata),
        "created_at": now,
        "created_by": created_by,
        "parts_etag": None if parts is None else parts.etag,
        "part_sizes": None if parts is None else list(parts.sizes),
        "content_headers": dict(content_headers) if content_headers else None,
        "unversioned": unversioned,
    }
    # One statement object for every insert; the row goes as parameters (see _blob_upsert).
    seq = int(insert_returning(conn, _VERSION_INSERT, row))
    _insert_tags(conn, seq, tag_map)
    locked = _lock_new_version(conn, bucket_id, seq, lock, now, object_lock)
    if written is not None:
        written.update(row, **locked)
    return seq


def _lock_new_version(
    conn: Connection,
    bid: int,
    seq: int,
    lock: VersionLock | None,
    now: datetime,
    stored: Any = _UNREAD,
) -> dict[str, Any]:
    """The lock asked for, else the bucket's default retention: in the version's own
    transaction, so no new version of a locked bucket is ever visible unlocked. Returns
    the lock columns it set."""
    if stored is _UNREAD:
        stored = conn.execute(select(buckets.c.object_lock).where(buckets.c.id == bid)).scalar()
    config = ObjectLockConfig.from_json(stored)
    asked = lock is not None and not lock.empty
    if asked and config is None:
        raise InvalidRequest("Bucket is missing Object Lock Configuration")
    values: dict[str, Any] = {}
    if lock is not None and lock.mode is not None:
        values = {"retention_mode": lock.mode, "retain_until": lock.retain_until}
    elif config is not None and config.default is not None:
        values = {"retention_mode": config.default.mode, "retain_until": config.default.until(now)}
    if lock is not None and lock.legal_hold is not None:
        values["legal_hold"] = lock.legal_hold
    if values:
        conn.execute(update(versions).where(versions.c.id == seq).values(**values))
    return values


def _insert_tags(conn: Connection, seq: int, tag_map: Mapping[str, str]) -> None:
    if tag_map:
        rows = [{"version_id": seq, "key": k, "value": v} for k, v in tag_map.items()]
        conn.execute(insert(tags), rows)


def _advance_head(conn: Connection, bid: int, key: str, seq: int) -> None:
    # Only a newer seq moves the head: when commits to one key overlap on PostgreSQL,
    # the one holding the larger seq wins whatever order they commit in (the WHERE is
    # re-checked on the locked row).
    head = {"bucket_id": bid, "key": key, "current_id": seq}
    run_write(conn, _head_upsert(conn.dialect.name), head)


_VERSION_COLUMNS = (
    *("file_id", "bucket_id", "key", "blob_id", "size", "etag", "sha256", "content_type"),
    *("category", "user_metadata", "created_at", "created_by", "parts_etag", "part_sizes"),
    *("content_headers", "unversioned"),
)
_VERSION_INSERT = (
    insert(versions)
    .values({name: bindparam(name, type_=versions.c[name].type) for name in _VERSION_COLUMNS})
    .returning(versions.c.id)
)
# The key's "null" version older than the one a commit just wrote (null_versions).
_OLDER_NULL_VERSIONS = select(versions.c.id).where(
    versions.c.bucket_id == bindparam("bid"),
    versions.c.key == bindparam("key"),
    versions.c.unversioned,
    versions.c.id < bindparam("seq"),
)
# What a commit reads of its bucket, in one statement (SQLite needs nothing more).
_BUCKET_SETTINGS = select(
    buckets.c.id,
    buckets.c.quota_bytes,
    buckets.c.quota_objects,
    buckets.c.versioning,
    buckets.c.object_lock,
).where(buckets.c.name == bindparam("name"))


# The two upserts every write runs, built once per dialect with bound parameters: building
# an INSERT ... ON CONFLICT anew costs more Python than executing it (the compiled SQL is
# cached either way, but only after the statement and its cache key are built).
@functools.cache
def _blob_upsert(dialect: str) -> ReturningInsert[Any]:
    columns = ("blob_id", "sha256", "md5", "size", "created_at", "block_size", "block_crc32c")
    stmt = _insert_for(dialect, blobs).values(
        {name: bindparam(name, type_=blobs.c[name].type) for name in columns} | {"refcount": 1}
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[blobs.c.sha256],
        set_={"refcount": blobs.c.refcount + 1, **keep_block_columns(stmt)},
    )
    return stmt.returning(blobs.c.blob_id, blobs.c.damage)


@functools.cache
def _head_upsert(dialect: str) -> postgresql.Insert | sqlite.Insert:
    names = ("bucket_id", "key", "current_id")
    stmt = _insert_for(dialect, object_keys).values(
        {name: bindparam(name, type_=object_keys.c[name].type) for name in names}
        | {"deleted_at": None}
    )
    return stmt.on_conflict_do_update(
        index_elements=[object_keys.c.bucket_id, object_keys.c.key],
        set_={"current_id": stmt.excluded.current_id, "deleted_at": None},
        where=object_keys.c.current_id < stmt.excluded.current_id,
    )


def _insert_for(dialect: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def _add_reference(conn: Connection, blob_id: str) -> None:
    stmt = update(blobs).where(blobs.c.blob_id == blob_id).values(refcount=blobs.c.refcount + 1)
    if conn.execute(stmt).rowcount != 1:
        # A version row always holds a reference, so its blob row cannot be gone.
        raise InternalError("the index lost track of a blob")


def _drop_reference(conn: Connection, blob_id: str) -> None:
    stmt = update(blobs).where(blobs.c.blob_id == blob_id).values(refcount=blobs.c.refcount - 1)
    conn.execute(stmt)


def _by_seq(conn: Connection, seq: int) -> ObjectVersion:
    found = read_version(conn, seq)  # one statement: every commit answers with it
    if found is None:
        raise InternalError("a version vanished inside its own transaction")
    return found
