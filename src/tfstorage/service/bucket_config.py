"""A bucket's S3 configuration as use-cases: its tag set, CORS rules and object lock.

S3's front door is the only one that speaks these today; they live here, not in
s3api/, so a REST or console door reads and writes the same settings.
"""

from __future__ import annotations

from collections.abc import Mapping

from tfstorage.domain.cors import CorsConfig
from tfstorage.domain.metadata import parse_tags
from tfstorage.domain.object_lock import ObjectLockConfig
from tfstorage.index.bucket_config import BucketConfigIndex
from tfstorage.service.context import StorageContext


class BucketConfigService:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        self._index = BucketConfigIndex(ctx.index.engine)

    async def tags(self, bucket: str) -> dict[str, str] | None:
        """The bucket's tag set; None when it never had one (or it was deleted)."""
        return await self._ctx.db(self._index.get_tags, bucket)

    async def set_tags(self, bucket: str, tag_set: Mapping[str, str] | None) -> None:
        """Replace the tag set (validated as object tags are); None deletes it."""
        value = None if tag_set is None else parse_tags(dict(tag_set))
        await self._ctx.db(self._index.set_tags, bucket, value)

    async def cors(self, bucket: str) -> CorsConfig | None:
        return await self._ctx.db(self._index.get_cors, bucket)

    async def set_cors(self, bucket: str, config: CorsConfig | None) -> None:
        await self._ctx.db(self._index.set_cors, bucket, config)

    async def object_lock(self, bucket: str) -> ObjectLockConfig | None:
        """The bucket's object lock; None when it is not enabled."""
        return await self._ctx.db(self._index.get_object_lock, bucket)

    async def set_object_lock(self, bucket: str, config: ObjectLockConfig) -> None:
        """Enable object lock (for good) with an optional default retention; the
        bucket must be versioned (InvalidBucketState otherwise)."""
        await self._ctx.db(self._index.set_object_lock, bucket, config)
