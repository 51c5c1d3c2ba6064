"""Buckets: the standard set, creation with S3 names, settings, deletion."""

from __future__ import annotations

from tfstorage.domain.filetypes import STANDARD_BUCKET_TYPES, normalize_types
from tfstorage.domain.names import validate_bucket_name
from tfstorage.domain.records import Bucket, BucketUsage
from tfstorage.errors import InvalidArgument, InvalidBucketName, NoSuchBucket
from tfstorage.service.context import StorageContext


class BucketService:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx

    async def ensure_standard(self) -> None:
        """Create `models`, `datasets`, ... and DEFAULT_BUCKET if they do not exist."""
        wanted = dict(STANDARD_BUCKET_TYPES)
        wanted.setdefault(self._ctx.settings.default_bucket, None)
        for name, types in wanted.items():
            await self._ctx.db(self._ctx.index.ensure_bucket, name, allowed_types=types)

    async def create(
        self,
        name: str,
        *,
        versioning: bool = True,
        allowed_types: list[str] | None = None,
        quota_bytes: int | None = None,
        quota_objects: int | None = None,
        description: str = "",
        public_read: bool = False,
        versioning_set: bool = True,
    ) -> Bucket:
        """`versioning_set=False`: versioning was never configured (S3's new bucket)."""
        validate_bucket_name(name)
        _check_quota(quota_bytes, quota_objects)
        self._ctx.bucket_cache.forget(name)  # a deleted namesake's record, if any
        return await self._ctx.db(
            self._ctx.index.create_bucket,
            name,
            allowed_types=normalize_types(allowed_types) if allowed_types is not None else None,
            versioning=versioning,
            quota_bytes=quota_bytes,
            quota_objects=quota_objects,
            description=description,
            public_read=public_read,
            versioning_set=versioning_set,
        )

    async def get(self, name: str) -> Bucket:
        validate_bucket_name(name)
        return await self._ctx.db(self._ctx.index.get_bucket, name)

    async def is_public_read(self, name: str) -> bool:
        """False for a bucket that does not exist (or a name that cannot be one)."""
        try:
            validate_bucket_name(name)
            bucket = await self._ctx.db(self._ctx.index.get_bucket, name)
        except (InvalidBucketName, NoSuchBucket):
            return False
        return bucket.public_read

    async def list(self) -> list[Bucket]:
        return await self._ctx.db(self._ctx.index.list_buckets)

    async def usage(self) -> dict[str, BucketUsage]:
        stats = await self._ctx.db(self._ctx.index.stats)
        return stats.buckets

    async def update(self, name: str, **changes: object) -> Bucket:
        validate_bucket_name(name)
        if "allowed_types" in changes and changes["allowed_types"] is not None:
            types = changes["allowed_types"]
            assert isinstance(types, list)
            changes["allowed_types"] = normalize_types(types)
        quota_bytes, quota_objects = changes.get("quota_bytes"), changes.get("quota_objects")
        _check_quota(
            quota_bytes if isinstance(quota_bytes, int) else None,
            quota_objects if isinstance(quota_objects, int) else None,
        )
        try:
            return await self._ctx.db(self._ctx.index.update_bucket, name, **changes)
        finally:
            self._ctx.bucket_cache.forget(name)  # also when the outcome is unknown

    async def delete(self, name: str, *, force: bool) -> None:
        """Delete a bucket (409 BucketNotEmpty unless empty or `force`); bytes that no
        other version references are removed by the next garbage collection."""
        validate_bucket_name(name)
        try:
            await self._ctx.db(self._ctx.index.delete_bucket, name, force=force)
        finally:
            self._ctx.bucket_cache.forget(name)


def _check_quota(quota_bytes: int | None, quota_objects: int | None) -> None:
    for label, value in (("quota_bytes", quota_bytes), ("quota_objects", quota_objects)):
        if value is not None and value < 0:
            raise InvalidArgument(f"{label} must not be negative")
