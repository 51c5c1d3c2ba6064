"""Turning rows into records: versions with their tags and head state, buckets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, Connection, Row, Select, and_, case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.schema import Table

from tfstorage.domain.blocks import BlockChecksums
from tfstorage.domain.content_headers import known_content_headers
from tfstorage.domain.records import Bucket, ObjectVersion
from tfstorage.errors import InvalidArgument, NoSuchBucket
from tfstorage.index.tables import blobs, buckets, object_keys, tags, versions

# Bound parameters per IN list: well under SQLite's and PostgreSQL's limits.
BATCH = 500

_T = TypeVar("_T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def require_aware(moment: datetime | None, what: str) -> None:
    if moment is not None and moment.tzinfo is None:
        raise InvalidArgument(f"{what} must carry a time zone")


def chunks(items: Iterable[_T], size: int = BATCH) -> Iterator[list[_T]]:
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def upsert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that accepts ON CONFLICT clauses, for whichever database is in use."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def block_columns(blocks: BlockChecksums | None) -> dict[str, Any]:
    """A new blob row's block checksum columns (NULL when there are none)."""
    if blocks is None:
        return {"block_size": None, "block_crc32c": None}
    return {"block_size": blocks.block_size, "block_crc32c": blocks.crc32c}


def keep_block_columns(stmt: postgresql.Insert | sqlite.Insert) -> dict[str, Any]:
    """On a dedup hit: the stored blob keeps its block checksums; one recorded before
    they existed takes the new upload's (its bytes hashed to the same SHA-256)."""
    keep = blobs.c.block_crc32c.is_not(None)
    return {
        "block_size": case((keep, blobs.c.block_size), else_=stmt.excluded.block_size),
        "block_crc32c": case((keep, blobs.c.block_crc32c), else_=stmt.excluded.block_crc32c),
    }


def block_checksums(size: int | None, crcs: bytes | None) -> BlockChecksums | None:
    return None if size is None or crcs is None else BlockChecksums(size, bytes(crcs))


def bucket_id(
    conn: Connection, name: str, *, lock: Literal["share", "update"] | None = None
) -> int:
    stmt = select(buckets.c.id).where(buckets.c.name == name)
    # PostgreSQL only (SQLite writers are serialised by BEGIN IMMEDIATE): "share" keeps
    # the bucket from being deleted under a commit; "update" waits for those commits.
    if lock == "share":
        stmt = stmt.with_for_update(read=True, key_share=True)
    elif lock == "update":
        stmt = stmt.with_for_update()
    found = conn.execute(stmt).scalar_one_or_none()
    if found is None:
        raise NoSuchBucket(name)
    return int(found)


def to_bucket(row: Row[Any]) -> Bucket:
    allowed = row.allowed_types
    return Bucket(
        name=row.name,
        created_at=row.created_at,
        versioning=bool(row.versioning),
        allowed_types=None if allowed is None else tuple(allowed),
        quota_bytes=row.quota_bytes,
        quota_objects=row.quota_objects,
        description=row.description,
        public_read=bool(row.public_read),
        versioning_set=bool(row.versioning_set),
    )


def version_columns() -> tuple[ColumnElement[Any], ...]:
    """What `version_of` reads: a version, its bucket's name, its key's head, its blob's
    damage mark."""
    return (
        versions.c.id,
        versions.c.file_id,
        buckets.c.name.label("bucket_name"),
        versions.c.key,
        versions.c.blob_id,
        versions.c.size,
        versions.c.etag,
        versions.c.parts_etag,
        versions.c.sha256,
        versions.c.content_type,
        versions.c.user_metadata,
        versions.c.created_at,
        versions.c.created_by,
        object_keys.c.current_id,
        object_keys.c.deleted_at,
        blobs.c.damage,
        versions.c.retain_until,
        versions.c.retention_mode,
        versions.c.legal_hold,
        versions.c.content_headers,
        versions.c.unversioned,
    )


def _version_select() -> Select[Any]:
    return select(*version_columns()).select_from(
        versions.join(buckets, buckets.c.id == versions.c.bucket_id)
        .join(blobs, blobs.c.blob_id == versions.c.blob_id)
        .outerjoin(
            object_keys,
            and_(
                object_keys.c.bucket_id == versions.c.bucket_id,
                object_keys.c.key == versions.c.key,
            ),
        )
    )


def fetch_versions(conn: Connection, where: ColumnElement[bool]) -> list[ObjectVersion]:
    """Versions matching `where`, newest first."""
    rows = conn.execute(_version_select().where(where).order_by(versions.c.id.desc())).all()
    return _build(conn, rows)


def fetch_version(conn: Connection, where: ColumnElement[bool]) -> ObjectVersion | None:
    found = fetch_versions(conn, where)
    return found[0] if found else None


def fetch_by_ids(conn: Connection, ids: Sequence[int]) -> dict[int, ObjectVersion]:
    result: dict[int, ObjectVersion] = {}
    for batch in chunks(ids):
        for version in fetch_versions(conn, versions.c.id.in_(batch)):
            result[version.seq] = version
    return result


def load_tags(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, str]]:
    found: dict[int, dict[str, str]] = {}
    for batch in chunks(ids):
        stmt = select(tags.c.version_id, tags.c.key, tags.c.value).where(
            tags.c.version_id.in_(batch)
        )
        for version_id, key, value in conn.execute(stmt):
            found.setdefault(version_id, {})[key] = value
    return found


def _build(conn: Connection, rows: Sequence[Row[Any]]) -> list[ObjectVersion]:
    tag_map = load_tags(conn, [row.id for row in rows])
    return [version_of(row, tag_map.get(row.id, {})) for row in rows]


def version_of(row: Any, tag_map: dict[str, str]) -> ObjectVersion:
    """A row of `version_columns()` as a record (or anything with its attributes: a
    commit's answer from what it wrote, index/writes.py `_as_written`)."""
    return ObjectVersion(
        file_id=row.file_id,
        seq=row.id,
        bucket=row.bucket_name,
        key=row.key,
        blob_id=row.blob_id,
        size=row.size,
        etag=row.etag,
        sha256=row.sha256,
        content_type=row.content_type,
        metadata=dict(row.user_metadata or {}),
        tags=tag_map,
        created_at=row.created_at,
        created_by=row.created_by,
        is_latest=row.current_id == row.id,
        deleted_at=row.deleted_at,
        damage=row.damage,
        parts_etag=row.parts_etag,
        retain_until=row.retain_until,
        retention_mode=row.retention_mode,
        legal_hold=bool(row.legal_hold),
        content_headers=known_content_headers(row.content_headers),
        unversioned=bool(row.unversioned),
    )
