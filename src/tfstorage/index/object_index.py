"""ObjectIndex: the metadata index, one transaction per public method."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text

from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.records import (
    Bucket,
    CommitResult,
    EntryListing,
    FileQuery,
    FileSearchPage,
    IndexStats,
    Listing,
    NewVersion,
    ObjectVersion,
)
from tfstorage.domain.uploads import PartLayout
from tfstorage.domain.version_listing import NULL_VERSION_ID, VersionListing
from tfstorage.errors import (
    InternalError,
    InvalidArgument,
    NoSuchKey,
    NoSuchVersion,
    StorageError,
)
from tfstorage.index import buckets as bucket_rows
from tfstorage.index import writes
from tfstorage.index.batch import commit_each
from tfstorage.index.conditions import check_head
from tfstorage.index.latest import read_latest, read_latest_on_driver
from tfstorage.index.listing import list_entries, list_objects
from tfstorage.index.reads import (
    bucket_id,
    chunks,
    fetch_version,
    fetch_versions,
    require_aware,
    utcnow,
)
from tfstorage.index.search import search_files
from tfstorage.index.stats import index_stats
from tfstorage.index.tables import blobs, object_keys, versions
from tfstorage.index.transactions import MAX_PAGE, IndexStore
from tfstorage.index.version_listing import list_object_versions


class ObjectIndex(IndexStore):
    """Buckets, object versions, heads and blob reference counts.

    Thread-safe: it holds nothing but the engine, whose pool hands each call its own
    connection. Every public method is one transaction.
    """

    # buckets -----------------------------------------------------------------------
    def create_bucket(
        self,
        name: str,
        *,
        allowed_types: Sequence[str] | None = None,
        versioning: bool = True,
        quota_bytes: int | None = None,
        quota_objects: int | None = None,
        description: str = "",
        public_read: bool = False,
        versioning_set: bool = True,
    ) -> Bucket:
        return self._write(
            lambda conn: bucket_rows.insert_bucket(
                conn,
                name,
                allowed_types=allowed_types,
                versioning=versioning,
                quota_bytes=quota_bytes,
                quota_objects=quota_objects,
                description=description,
                public_read=public_read,
                versioning_set=versioning_set,
                exist_ok=False,
            )
        )

    def ensure_bucket(self, name: str, *, allowed_types: Sequence[str] | None = None) -> Bucket:
        """Create the bucket unless it exists; an existing one is returned unchanged."""
        return self._write(
            lambda conn: bucket_rows.insert_bucket(
                conn,
                name,
                allowed_types=allowed_types,
                versioning=True,
                quota_bytes=None,
                quota_objects=None,
                description="",
                exist_ok=True,
            )
        )

    def get_bucket(self, name: str) -> Bucket:
        return self._read(lambda conn: bucket_rows.get_bucket(conn, name))

    def list_buckets(self) -> list[Bucket]:
        return self._read(bucket_rows.list_buckets)

    def update_bucket(self, name: str, **fields: Any) -> Bucket:
        return self._write(lambda conn: bucket_rows.update_bucket(conn, name, fields))

    def delete_bucket(self, name: str, *, force: bool) -> None:
        self._write(lambda conn: bucket_rows.delete_bucket(conn, name, force=force))

    # versions ----------------------------------------------------------------------
    def commit_version(self, new: NewVersion) -> CommitResult:
        return self._write(lambda conn: writes.commit_version(conn, new))

    def commit_versions(
        self,
        news: Sequence[NewVersion],
        *,
        then: Callable[[Connection, Sequence[CommitResult]], object] | None = None,
    ) -> list[CommitResult]:
        """Several versions in one transaction: all of them become visible, or none.
        `then(connection, results)` runs last in the same transaction (a completed upload
        session closes in it: the object appears exactly when the session goes)."""

        return self._write(_committing(news, then))

    async def commit_versions_async(
        self,
        news: Sequence[NewVersion],
        *,
        then: Callable[[Connection, Sequence[CommitResult]], object] | None = None,
    ) -> list[CommitResult]:
        """`commit_versions` from an event loop (on SQLite, without a thread hop)."""
        return await self._write_async(_committing(news, then))

    def commit_versions_each(self, news: Sequence[NewVersion]) -> list[CommitResult | StorageError]:
        """Several versions in one transaction, each on its own: one refused (a quota,
        say) is rolled back alone and returned as its error; the others commit."""
        return self._write(lambda conn: commit_each(conn, news))

    async def commit_versions_each_async(
        self, news: Sequence[NewVersion]
    ) -> list[CommitResult | StorageError]:
        """`commit_versions_each` from an event loop."""
        return await self._write_async(lambda conn: commit_each(conn, news))

    def get_version(self, file_id: str) -> ObjectVersion:
        if "\x00" in file_id:  # names nothing, and PostgreSQL refuses NUL in a text value
            raise NoSuchVersion(file_id.replace("\x00", ""))

        def run(conn: Connection) -> ObjectVersion:
            found = fetch_version(conn, versions.c.file_id == file_id)
            if found is None:
                raise NoSuchVersion(file_id)
            return found

        return self._read(run)

    def part_layout(self, version: ObjectVersion) -> PartLayout | None:
        """How `version` was cut into parts (None: written whole). Read apart from the
        version: ten thousand sizes are not worth loading for every read and listing."""
        if version.parts_etag is None:
            return None
        sizes = self._read(
            lambda conn: conn.execute(
                select(versions.c.part_sizes).where(versions.c.file_id == version.file_id)
            ).scalar_one_or_none()
        )
        if sizes is None:
            return None
        return PartLayout(version.parts_etag, tuple(int(size) for size in sizes))

    def resolve_latest(self, bucket: str, key: str) -> ObjectVersion:
        dialect = self._engine.dialect
        if dialect.name == "sqlite":
            return self._read_driver(
                lambda driver: read_latest_on_driver(driver, dialect, bucket, key)
            )
        return self._read_statement(lambda conn: read_latest(conn, bucket, key))

    def in_trash(self, bucket: str, key: str) -> bool:
        """Is the key deleted, its versions kept restorable (S3: under a delete marker)?"""

        def run(conn: Connection) -> bool:
            found = conn.execute(
                select(object_keys.c.deleted_at).where(
                    object_keys.c.bucket_id == bucket_id(conn, bucket), object_keys.c.key == key
                )
            ).first()
            return found is not None and found.deleted_at is not None

        return self._read(run)

    def list_versions(self, bucket: str, key: str) -> list[ObjectVersion]:
        def run(conn: Connection) -> list[ObjectVersion]:
            bid = bucket_id(conn, bucket)
            found = fetch_versions(conn, (versions.c.bucket_id == bid) & (versions.c.key == key))
            if not found:
                raise NoSuchKey(bucket, key)
            return found

        return self._read(run)

    def list_objects(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        limit: int = MAX_PAGE,
    ) -> Listing:
        page = _page_size(limit)
        return self._read(
            lambda conn: list_objects(
                conn,
                bucket_id(conn, bucket),
                prefix=prefix,
                delimiter=delimiter,
                marker=marker,
                limit=page,
            )
        )

    def list_entries(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        limit: int = MAX_PAGE,
    ) -> EntryListing:
        page = _page_size(limit)
        return self._read(
            lambda conn: list_entries(
                conn,
                bucket_id(conn, bucket),
                prefix=prefix,
                delimiter=delimiter,
                marker=marker,
                limit=page,
            )
        )

    def list_object_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        version_marker: str = "",
        limit: int = MAX_PAGE,
    ) -> VersionListing:
        page = _page_size(limit)
        return self._read(
            lambda conn: list_object_versions(
                conn,
                bucket_id(conn, bucket),
                prefix=prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                version_marker=version_marker,
                limit=page,
            )
        )

    def search_files(self, q: FileQuery) -> FileSearchPage:
        return self._read(lambda conn: search_files(conn, q))

    def delete_key(
        self, bucket: str, key: str, condition: WriteCondition | None = None
    ) -> ObjectVersion:
        return self._write(
            lambda conn: _head_of(conn, writes.set_deleted(conn, bucket, key, utcnow(), condition))
        )

    def restore_key(
        self, bucket: str, key: str, condition: WriteCondition | None = None
    ) -> ObjectVersion:
        def run(conn: Connection) -> ObjectVersion:
            head = _head(conn, bucket, key)
            if head is not None and head.deleted_at is not None:
                writes.check_restore_quota(conn, bucket_id(conn, bucket), key, head.size)
            if condition is not None:  # on the locked head (after the bucket: lock order)
                check_head(conn, bucket_id(conn, bucket), key, condition)
            return _head_of(conn, writes.set_deleted(conn, bucket, key, None))

        return self._write(run)

    def restore_version(
        self, file_id: str, created_by: str, condition: WriteCondition | None = None
    ) -> CommitResult:
        return self._write(
            lambda conn: writes.restore_version(conn, file_id, created_by, condition)
        )

    def null_version(self, bucket: str, key: str) -> ObjectVersion:
        """The key's version written unversioned (S3's "null" version)."""

        def run(conn: Connection) -> ObjectVersion:
            found = fetch_version(conn, writes.null_versions(bucket_id(conn, bucket), key))
            if found is None:
                raise NoSuchVersion(NULL_VERSION_ID)
            return found

        return self._read(run)

    def delete_null_and_hide(self, bucket: str, key: str) -> ObjectVersion:
        return self._write(lambda conn: writes.delete_null_and_hide(conn, bucket, key))

    def delete_version(self, file_id: str, *, bypass_governance: bool = False) -> ObjectVersion:
        return self._write(
            lambda conn: writes.delete_version(conn, file_id, bypass_governance=bypass_governance)
        )

    def update_version(
        self,
        file_id: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> ObjectVersion:
        return self._write(
            lambda conn: writes.update_version(
                conn, file_id, metadata=metadata, tag_map=tags, content_type=content_type
            )
        )

    # maintenance -------------------------------------------------------------------
    def claim_unreferenced_blobs(self, limit: int = MAX_PAGE) -> list[str]:
        page = _page_size(limit)
        return self._write(lambda conn: writes.claim_unreferenced_blobs(conn, page))

    def has_blobs(self) -> bool:
        """Does the index reference any stored bytes at all?"""
        return self._read(
            lambda conn: conn.execute(select(blobs.c.blob_id).limit(1)).first() is not None
        )

    def known_blob_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(ids))

        def run(conn: Connection) -> set[str]:
            found: set[str] = set()
            for batch in chunks(wanted):
                stmt = select(blobs.c.blob_id).where(blobs.c.blob_id.in_(batch))
                found.update(conn.execute(stmt).scalars())
            return found

        return self._read(run)

    def purge_deleted(self, before: datetime, limit: int = MAX_PAGE) -> int:
        """Permanently delete up to `limit` trashed keys (all their versions); returns
        the number of versions deleted."""
        page = _page_size(limit)
        require_aware(before, "before")
        return self._write(lambda conn: writes.purge_deleted(conn, before, page))

    def stats(self) -> IndexStats:
        return self._read(index_stats)

    def ping(self) -> None:
        self._read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())


def _committing(
    news: Sequence[NewVersion],
    then: Callable[[Connection, Sequence[CommitResult]], object] | None,
) -> Callable[[Connection], list[CommitResult]]:
    def run(conn: Connection) -> list[CommitResult]:
        results = [writes.commit_version(conn, new) for new in news]
        if then is not None:
            then(conn, results)
        return results

    return run


def _page_size(limit: int) -> int:
    if limit < 1:
        raise InvalidArgument("limit must be at least 1")
    return min(limit, MAX_PAGE)


def _head(conn: Connection, bucket: str, key: str) -> ObjectVersion | None:
    bid = bucket_id(conn, bucket)
    head = select(object_keys.c.current_id).where(
        object_keys.c.bucket_id == bid, object_keys.c.key == key
    )
    return fetch_version(conn, versions.c.id == head.scalar_subquery())


def _head_of(conn: Connection, seq: int) -> ObjectVersion:
    found = fetch_version(conn, versions.c.id == seq)
    if found is None:
        raise InternalError("a head points at no version")
    return found
