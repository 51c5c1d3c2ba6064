"""Moving a blob to the archive tier: copy (checking its SHA-256 on the way), record the
move in the index, then delete the primary copy. Reads find the bytes in either tier
throughout (blobs/tiered.py), so the order only has to keep one good copy at all times.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread

from tfstorage.blobs.base import BlobNotFound, BlobStore
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.blobs.tiered import TieredBlobStore
from tfstorage.domain.lifecycle import Expiry
from tfstorage.index.lifecycle import ARCHIVE, AuditFields, LifecycleIndex
from tfstorage.service.context import StorageContext
from tfstorage.service.hashing import INLINE_HASH_BELOW

log = logging.getLogger(__name__)


def tiered_store(blobs: BlobStore) -> TieredBlobStore | None:
    if isinstance(blobs, ReplicatedBlobStore):
        blobs = blobs.primary
    return blobs if isinstance(blobs, TieredBlobStore) else None


class ArchiveMover:
    def __init__(self, ctx: StorageContext, index: LifecycleIndex) -> None:
        self._ctx = ctx
        self._index = index
        self.store = tiered_store(ctx.blobs)

    async def move(self, bucket: str, expiry: Expiry, audit: AuditFields) -> bool:
        """True if this call moved the blob; False if there was nothing to do (moved
        already, collected meanwhile) or the primary copy failed its checksum."""
        tiers = self.store
        if tiers is None:
            return False
        try:
            stream = await tiers.primary.open(expiry.blob_id)
        except BlobNotFound:
            return False  # moved by someone else, or collected
        digest = hashlib.sha256()

        async def checked() -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    if len(chunk) < INLINE_HASH_BELOW:
                        digest.update(chunk)
                    else:
                        await anyio.to_thread.run_sync(digest.update, chunk)
                    yield chunk
            finally:
                await stream.aclose()

        written = await tiers.archive.put(expiry.blob_id, checked())
        if written != expiry.size or digest.hexdigest() != expiry.sha256:
            # Never archive bad bytes as if they were good: the integrity checks (verify,
            # the scrub) deal with the primary copy.
            log.error("not archiving blob %s of %s/%s: its bytes fail their checksum",
                      expiry.blob_id, bucket, expiry.key)  # fmt: skip
            await self._drop_archive_copy(expiry.blob_id)
            return False
        if await self._ctx.db(self._index.mark_archived, bucket, expiry, audit=audit):
            await tiers.primary.delete(expiry.blob_id)
            return True
        await self._drop_archive_copy(expiry.blob_id)
        return False

    async def _drop_archive_copy(self, blob_id: str) -> None:
        # Only a copy the index does not count on: one another runner recorded stays.
        known, location = await self._ctx.db(self._index.blob_location, blob_id)
        if self.store is not None and not (known and location == ARCHIVE):
            await self.store.archive.delete(blob_id)
