"""Bucket rows: create, read, update, delete (with everything in them when forced)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, exists, select, update

from tfstorage.domain.records import Bucket
from tfstorage.errors import (
    BucketAlreadyExists,
    BucketNotEmpty,
    InvalidBucketState,
    NoSuchBucket,
)
from tfstorage.index.locks import refuse_locked
from tfstorage.index.reads import bucket_id, to_bucket, upsert, utcnow
from tfstorage.index.tables import buckets, lifecycle_rules, object_keys, versions
from tfstorage.index.writes import remove_versions

UPDATABLE = frozenset(
    {"versioning", "allowed_types", "quota_bytes", "quota_objects", "description", "public_read"}
)


def _types(allowed: Sequence[str] | None) -> list[str] | None:
    return None if allowed is None else list(allowed)


def insert_bucket(
    conn: Connection,
    name: str,
    *,
    allowed_types: Sequence[str] | None,
    versioning: bool,
    quota_bytes: int | None,
    quota_objects: int | None,
    description: str,
    exist_ok: bool,
    public_read: bool = False,
    versioning_set: bool = True,
) -> Bucket:
    # ON CONFLICT DO NOTHING rather than catching IntegrityError: a failed statement
    # would abort the whole PostgreSQL transaction, and racing creators must both succeed.
    stmt = (
        upsert(conn, buckets)
        .values(
            name=name,
            created_at=utcnow(),
            versioning=versioning,
            allowed_types=_types(allowed_types),
            quota_bytes=quota_bytes,
            quota_objects=quota_objects,
            description=description,
            public_read=public_read,
            versioning_set=versioning_set,
        )
        .on_conflict_do_nothing(index_elements=[buckets.c.name])
        .returning(buckets.c.id)
    )
    if conn.execute(stmt).first() is None and not exist_ok:
        raise BucketAlreadyExists(name)
    return get_bucket(conn, name)


def get_bucket(conn: Connection, name: str) -> Bucket:
    row = conn.execute(select(buckets).where(buckets.c.name == name)).first()
    if row is None:
        raise NoSuchBucket(name)
    return to_bucket(row)


def list_buckets(conn: Connection) -> list[Bucket]:
    return [to_bucket(row) for row in conn.execute(select(buckets).order_by(buckets.c.name))]


def update_bucket(conn: Connection, name: str, fields: dict[str, Any]) -> Bucket:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise TypeError(f"cannot update bucket field(s): {', '.join(sorted(unknown))}")
    if "allowed_types" in fields:
        fields = {**fields, "allowed_types": _types(fields["allowed_types"])}
    if "versioning" in fields:
        fields = {**fields, "versioning_set": True}  # configured now, whichever way
    if fields.get("versioning") is False:
        lock = conn.execute(select(buckets.c.object_lock).where(buckets.c.name == name))
        if (lock.scalar_one_or_none() or {}).get("enabled"):
            raise InvalidBucketState("versioning cannot be suspended on a bucket with object lock")
    if fields:
        stmt = update(buckets).where(buckets.c.name == name).values(**fields)
        if conn.execute(stmt).rowcount == 0:
            raise NoSuchBucket(name)
    return get_bucket(conn, name)


def delete_bucket(conn: Connection, name: str, *, force: bool) -> None:
    # The row lock makes concurrent commits into this bucket wait, then fail cleanly.
    bid = bucket_id(conn, name, lock="update")
    if not force:
        live = exists().where(object_keys.c.bucket_id == bid, object_keys.c.deleted_at.is_(None))
        if conn.execute(select(live)).scalar():
            raise BucketNotEmpty(name)
    refuse_locked(conn, versions.c.bucket_id == bid, "delete the bucket")
    remove_versions(conn, versions.c.bucket_id == bid, object_keys.c.bucket_id == bid)
    conn.execute(delete(lifecycle_rules).where(lifecycle_rules.c.bucket_id == bid))
    conn.execute(delete(buckets).where(buckets.c.id == bid))
