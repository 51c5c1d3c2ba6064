"""A primary blob store with an archive tier behind it (lifecycle's `archive_days`).

Everything is written to the primary. Lifecycle moves old blobs to the archive (copy,
record the move in the index, delete the primary copy), and reads find a blob wherever
it is: the primary first, then the archive. Reading by fallback rather than by the
index's record means no read ever races with a move (a reader that looked a version up
before the move still finds its bytes), and every path that reads blobs (downloads,
verify, the scrub, dedup's health check) works on archived blobs unchanged. Deletes
remove both copies.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Collection

from tfstorage.blobs.base import (
    BlobInfo,
    BlobNotFound,
    BlobStore,
    ByteStream,
    Capacity,
    PartsOnPrimary,
)


class TieredBlobStore(PartsOnPrimary):
    name = "tiered"

    def __init__(self, primary: BlobStore, archive: BlobStore) -> None:
        self.primary = primary
        self.archive = archive

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        return await self.primary.put(blob_id, chunks)

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        try:
            return await self.primary.open(blob_id, start, end)
        except BlobNotFound:
            return await self.archive.open(blob_id, start, end)

    async def stat(self, blob_id: str) -> BlobInfo:
        try:
            return await self.primary.stat(blob_id)
        except BlobNotFound:
            return await self.archive.stat(blob_id)

    async def delete(self, blob_id: str) -> None:
        await self.primary.delete(blob_id)
        await self.archive.delete(blob_id)

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        # Both tiers: garbage collection removes orphans of interrupted moves too.
        async for info in self.primary.list_blobs():
            yield info
        async for info in self.archive.list_blobs():
            yield info

    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        swept = await self.primary.sweep_incomplete(older_than, keep)
        return swept + await self.archive.sweep_incomplete(older_than, keep)

    async def capacity(self) -> Capacity:
        return await self.primary.capacity()

    async def check(self) -> None:
        await self.primary.check()
        await self.archive.check()

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.archive.close()
