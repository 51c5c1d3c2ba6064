"""Listing, searching, versions, metadata updates, delete and restore of objects."""

from __future__ import annotations

from typing import Any

from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.filetypes import validate_content_type
from tfstorage.domain.metadata import validate_metadata
from tfstorage.domain.names import validate_bucket_name, validate_key, validate_prefix
from tfstorage.domain.object_lock import VersionLock
from tfstorage.domain.records import (
    EntryListing,
    FileQuery,
    FileSearchPage,
    ObjectVersion,
)
from tfstorage.domain.version_listing import NULL_VERSION_ID, VersionListing, marked_head
from tfstorage.errors import InvalidArgument, NoSuchKey, NoSuchVersion, StorageError
from tfstorage.index.batch import BatchIndex, CopyItem
from tfstorage.service.context import StorageContext
from tfstorage.service.writes import check_allowed_type


class ObjectCatalog:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx

    def _limit(self, limit: int | None) -> int:
        cap = self._ctx.settings.max_listing_limit
        if limit is None:
            return cap
        if limit < 1:
            raise InvalidArgument("limit must be at least 1")
        return min(limit, cap)

    async def list_entries(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        limit: int | None = None,
    ) -> EntryListing:
        """A page of keys as listings show them (ListEntry: no metadata, tags or blob)."""
        validate_bucket_name(bucket)
        validate_prefix(prefix)
        if len(delimiter) > 1:
            raise InvalidArgument("the delimiter must be a single character")
        with self._ctx.metrics.time("list_objects"):
            # One trip to the index: its bucket lookup says NoSuchBucket itself.
            return await self._ctx.db(
                self._ctx.index.list_entries,
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                marker=marker,
                limit=self._limit(limit),
            )

    async def list_object_versions(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        version_marker: str = "",
        limit: int | None = None,
    ) -> VersionListing:
        """Every version of the keys, and each trashed key's delete marker (S3's view)."""
        validate_bucket_name(bucket)
        validate_prefix(prefix)
        if len(delimiter) > 1:
            raise InvalidArgument("the delimiter must be a single character")
        with self._ctx.metrics.time("list_object_versions"):
            await self._ctx.db(self._ctx.index.get_bucket, bucket)
            return await self._ctx.db(
                self._ctx.index.list_object_versions,
                bucket,
                prefix=prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                version_marker=version_marker,
                limit=self._limit(limit),
            )

    async def search(self, query: FileQuery) -> FileSearchPage:
        if query.bucket is not None:
            validate_bucket_name(query.bucket)
            await self._ctx.db(self._ctx.index.get_bucket, query.bucket)
        if query.prefix:
            validate_prefix(query.prefix)
        return await self._ctx.db(self._ctx.index.search_files, query)

    async def in_trash(self, bucket: str, key: str) -> bool:
        """Is the key deleted and restorable (what S3 clients see as a delete marker)?"""
        validate_bucket_name(bucket)
        validate_key(key)
        return await self._ctx.db(self._ctx.index.in_trash, bucket, key)

    async def versions(self, bucket: str, key: str) -> list[ObjectVersion]:
        validate_bucket_name(bucket)
        validate_key(key)
        await self._ctx.db(self._ctx.index.get_bucket, bucket)
        return await self._ctx.db(self._ctx.index.list_versions, bucket, key)

    async def update(
        self,
        file_id: str,
        *,
        metadata: dict[str, Any] | None,
        tags: dict[str, str] | None,
        content_type: str | None,
    ) -> ObjectVersion:
        if metadata is not None:
            metadata = validate_metadata(metadata)
        if content_type is not None:
            content_type = validate_content_type(content_type) or "application/octet-stream"
        return await self._ctx.db(
            self._ctx.index.update_version,
            file_id,
            metadata=metadata,
            tags=tags,
            content_type=content_type,
        )

    async def delete_key(
        self, bucket: str, key: str, *, condition: WriteCondition | None = None
    ) -> ObjectVersion:
        """Hide the key; its versions stay restorable for RETENTION_DAYS. `condition`
        (If-Match: delete only while that is the latest) is judged on the locked head."""
        validate_bucket_name(bucket)
        validate_key(key)
        with self._ctx.metrics.time("delete_key"):
            await self._ctx.db(self._ctx.index.get_bucket, bucket)
            return await self._ctx.db(self._ctx.index.delete_key, bucket, key, condition)

    async def delete_null_and_hide(self, bucket: str, key: str) -> ObjectVersion:
        """S3's DELETE with versioning suspended: the key's "null" version goes for good,
        the key goes to the trash (versions written while versioning was on are kept)."""
        validate_bucket_name(bucket)
        validate_key(key)
        with self._ctx.metrics.time("delete_key"):
            await self._ctx.db(self._ctx.index.get_bucket, bucket)
            return await self._ctx.db(self._ctx.index.delete_null_and_hide, bucket, key)

    async def delete_version(
        self, file_id: str, *, bypass_governance: bool = False
    ) -> ObjectVersion:
        """Remove one version for good (its bytes go when nothing else references them).
        `bypass_governance`: a GOVERNANCE retention does not stop it (the caller checked
        the right to say so)."""
        with self._ctx.metrics.time("delete_version"):
            return await self._ctx.db(
                self._ctx.index.delete_version, file_id, bypass_governance=bypass_governance
            )

    async def delete_key_version(
        self, bucket: str, key: str, file_id: str, *, bypass_governance: bool = False
    ) -> ObjectVersion:
        """Remove one version of `bucket/key` for good; removing a trashed key's delete
        marker (domain/version_listing.py) takes the key out of the trash, as on S3."""
        head_id = marked_head(file_id)
        if head_id is not None:
            head = await self._ctx.db(self._ctx.index.get_version, head_id)
            if (head.bucket, head.key) != (bucket, key) or not head.is_latest:
                raise NoSuchKey(bucket, key)
            if head.deleted_at is None:
                raise NoSuchKey(bucket, key)  # the marker is gone already
            return await self._ctx.db(self._ctx.index.restore_key, bucket, key, None)
        if file_id == NULL_VERSION_ID:
            try:
                null = await self._ctx.db(self._ctx.index.null_version, bucket, key)
            except NoSuchVersion:
                raise NoSuchKey(bucket, key) from None  # S3: removing what is not there
            file_id = null.file_id
        version = await self._ctx.db(self._ctx.index.get_version, file_id)
        if version.bucket != bucket or version.key != key:
            raise NoSuchKey(bucket, key)
        return await self.delete_version(file_id, bypass_governance=bypass_governance)

    async def restore(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None,
        created_by: str,
        condition: WriteCondition | None = None,
    ) -> ObjectVersion:
        """Undelete a key, or make an older version the latest again (as a new version
        sharing its bytes, so history stays immutable). `condition` is judged against
        the key's latest as it stands before the restore (a trashed key is absent)."""
        validate_bucket_name(bucket)
        validate_key(key)
        await self._ctx.db(self._ctx.index.get_bucket, bucket)
        if version_id is None:
            return await self._ctx.db(self._ctx.index.restore_key, bucket, key, condition)
        version = await self._ctx.db(self._ctx.index.get_version, version_id)
        if version.bucket != bucket or version.key != key:
            raise NoSuchKey(bucket, key)
        result = await self._ctx.db(
            self._ctx.index.restore_version, version_id, created_by, condition
        )
        return result.version

    async def copy(
        self,
        source: ObjectVersion,
        bucket: str,
        key: str,
        *,
        created_by: str,
        metadata: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        content_type: str | None = None,
        lock: VersionLock | None = None,
        content_headers: dict[str, str] | None = None,
    ) -> ObjectVersion:
        """A new version of `bucket/key` sharing the source's blob: no bytes move. The
        destination's allowed types, quota and versioning apply as to an upload."""
        validate_bucket_name(bucket)
        validate_key(key)
        if metadata is not None:
            validate_metadata(metadata)
        if content_type is not None:
            content_type = validate_content_type(content_type) or None
        check_allowed_type(await self._ctx.db(self._ctx.index.get_bucket, bucket), key)
        item = CopyItem(
            source,
            bucket,
            key,
            True,
            created_by,
            metadata,
            tags,
            content_type,
            lock=lock,
            content_headers=content_headers,
        )
        batch = BatchIndex(self._ctx.index.engine)
        with self._ctx.metrics.time("copy_object"):
            (result,) = await self._ctx.db(batch.copy_versions, [item])
        if isinstance(result, StorageError):
            raise result
        assert result is not None  # an overwriting copy is never skipped
        return result.version
