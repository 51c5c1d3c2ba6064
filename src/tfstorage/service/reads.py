"""The read path: resolve a version, then stream its blob (whole or a byte range)."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from tfstorage.blobs.base import BlobNotFound, ByteStream
from tfstorage.domain.names import validate_bucket_name, validate_key
from tfstorage.domain.ranges import ByteRange
from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import NoSuchKey, ObjectCorrupted
from tfstorage.service.context import StorageContext


class ObjectReader:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx

    async def resolve(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion:
        """The latest visible version of a key, or one named version of it."""
        validate_bucket_name(bucket)
        validate_key(key)
        if version_id is None:
            return await self._ctx.db(self._ctx.index.resolve_latest, bucket, key)
        version = await self._ctx.db(self._ctx.index.get_version, version_id)
        if version.bucket != bucket or version.key != key:
            raise NoSuchKey(bucket, key)  # a file id of another object names nothing here
        return version

    async def by_id(self, file_id: str) -> ObjectVersion:
        return await self._ctx.db(self._ctx.index.get_version, file_id)

    async def open(self, version: ObjectVersion, byte_range: ByteRange | None) -> ByteStream:
        """Open the version's bytes; fails here, before any header is sent, if missing."""
        start, end = (byte_range.start, byte_range.end) if byte_range else (0, version.size)
        try:
            stream = await self._ctx.blobs.open(version.blob_id, start, end)
        except BlobNotFound:
            raise ObjectCorrupted(f"the stored data of {version.key!r} is missing") from None
        self._ctx.metrics.downloads.labels(bucket=version.bucket).inc()
        return self._count(stream)

    async def _count(self, stream: ByteStream) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in stream:
                self._ctx.metrics.bytes_out.inc(len(chunk))
                yield chunk
        finally:
            await stream.aclose()
