"""The read path: resolve a version, then stream its blob (whole or a byte range)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator

from tfstorage.blobs.base import BlobNotFound, ByteStream
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.domain.blocks import BlockMismatch, RangeVerifier
from tfstorage.domain.names import validate_bucket_name, validate_key
from tfstorage.domain.ranges import ByteRange
from tfstorage.domain.records import ObjectVersion
from tfstorage.domain.uploads import PartLayout
from tfstorage.domain.version_listing import NULL_VERSION_ID
from tfstorage.errors import NoSuchKey, ObjectCorrupted
from tfstorage.index.integrity import Damage
from tfstorage.service.context import StorageContext
from tfstorage.service.hashing import INLINE_HASH_BELOW
from tfstorage.service.integrity import IntegrityChecker

log = logging.getLogger(__name__)

# Whole objects up to this size are read (checksum verified) and sent as one response: a
# streamed response costs a task, a chunk loop and more ASGI sends than a small body's
# bytes, and a failed check then becomes a clean 500 instead of a cut connection. Ranges
# keep streaming: their verified blocks go out before a bad one cuts the response.
WHOLE_BODY_UP_TO = 64 * 1024

# Whole objects from this size on are checked block by block (CRC32C, ~18 GB/s here),
# as ranges are, instead of against their SHA-256 (~1.5 GB/s on one core: 0.7 s of CPU
# per GiB, the largest cost of a large GET). Below it the SHA-256 is cheaper than the
# index read of the block checksums. Either way no wrong byte leaves: a block is sent
# only once it matched, and a SHA-256 mismatch cuts the response before its last byte.
BLOCKWISE_WHOLE_FROM = 2 * 1024 * 1024
# ... unless its blocks are larger than this (BLOCK_SIZE goes up to 64 MiB): a block is
# held until it is checked, and a whole GET would then stall and hold that much, where
# the SHA-256 check streams.
BLOCKWISE_WHOLE_BLOCKS_UP_TO = 4 * 1024 * 1024


async def read_whole(stream: ByteStream) -> bytes:
    try:
        return b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()


class ObjectReader:
    def __init__(self, ctx: StorageContext, integrity: IntegrityChecker | None = None) -> None:
        self._ctx = ctx
        # Blobs whose primary copy failed its checksum are marked in the index: without
        # a replica they are refused before any byte is sent, with one they are read
        # from the replica until a verify or the scrub repairs them.
        self._integrity = integrity or IntegrityChecker(ctx)

    async def resolve(self, bucket: str, key: str, version_id: str | None = None) -> ObjectVersion:
        """The latest visible version of a key, or one named version of it."""
        validate_bucket_name(bucket)
        validate_key(key)
        if version_id is None:
            return await self._ctx.read_now(self._ctx.index.resolve_latest, bucket, key)
        if version_id == NULL_VERSION_ID:
            return await self._ctx.db(self._ctx.index.null_version, bucket, key)
        version = await self._ctx.db(self._ctx.index.get_version, version_id)
        if version.bucket != bucket or version.key != key:
            raise NoSuchKey(bucket, key)  # a file id of another object names nothing here
        return version

    async def part_range(self, version: ObjectVersion, part_number: int) -> ByteRange | None:
        """The bytes of part `part_number` of a version assembled from parts; None when
        it has no such part. A version written whole is its own part 1."""
        layout = await self._ctx.db(self._ctx.index.part_layout, version)
        if layout is None:
            return ByteRange(0, version.size) if part_number == 1 else None
        found = layout.locate(part_number)
        return None if found is None else ByteRange(found[0], found[0] + found[1])

    async def part_layout(self, version: ObjectVersion) -> PartLayout | None:
        """How a version assembled from parts was cut; None for one written whole."""
        return await self._ctx.db(self._ctx.index.part_layout, version)

    async def by_id(self, file_id: str) -> ObjectVersion:
        return await self._ctx.db(self._ctx.index.get_version, file_id)

    async def open(self, version: ObjectVersion, byte_range: ByteRange | None) -> ByteStream:
        """Open the version's bytes; fails here, before any header is sent, if missing."""
        start, end = (byte_range.start, byte_range.end) if byte_range else (0, version.size)
        whole = start == 0 and end == version.size
        blobs = self._ctx.blobs
        if version.damage is not None and not isinstance(blobs, ReplicatedBlobStore):
            raise ObjectCorrupted(f"the stored data of {version.key!r} is {version.damage}")
        verifier = None
        if not whole or version.size >= BLOCKWISE_WHOLE_FROM:
            verifier = await self._range_verifier(version, start, end)
            if (
                whole
                and verifier is not None
                and verifier.block_size > BLOCKWISE_WHOLE_BLOCKS_UP_TO
            ):
                verifier = None
        if verifier is not None:
            start, end = verifier.read_start, verifier.read_end  # whole blocks
        on_replica = version.damage is not None
        try:
            if on_replica and isinstance(blobs, ReplicatedBlobStore):
                stream = await blobs.open_replica(version.blob_id, start, end)
            else:
                try:
                    stream = await blobs.open(version.blob_id, start, end)
                except ValueError:
                    # The stored blob is shorter than the index says: truncated.
                    await self._integrity.mark(version.blob_id, "truncated")
                    if not isinstance(blobs, ReplicatedBlobStore):
                        raise ObjectCorrupted(
                            f"the stored data of {version.key!r} is truncated"
                        ) from None
                    stream = await blobs.open_replica(version.blob_id, start, end)
                    on_replica = True
        except BlobNotFound:
            if version.damage is None:
                await self._integrity.mark(version.blob_id, "missing")
            raise ObjectCorrupted(f"the stored data of {version.key!r} is missing") from None
        self._ctx.metrics.downloads.labels(bucket=version.bucket).inc()
        if verifier is not None:
            return self._blockwise(stream, version, verifier, on_replica=on_replica)
        if not whole:
            return self._counted(stream)  # a blob without block checksums yet: unverified
        # Bytes read from the replica because the primary is marked say nothing new
        # about the primary: a mismatch then leaves the mark as it is.
        return self._verified(stream, version, mark=version.damage is None)

    async def _range_verifier(
        self, version: ObjectVersion, start: int, end: int
    ) -> RangeVerifier | None:
        blocks = await self._ctx.db(self._ctx.integrity.block_checksums, version.blob_id)
        if blocks is None:
            return None  # written before block checksums; the scrub fills them in
        if not blocks.fits(version.size):
            log.error("blob %s: its block checksums do not fit its size", version.blob_id)
            return None
        return RangeVerifier(blocks, start, end, version.size)

    async def _blockwise(
        self,
        stream: ByteStream,
        version: ObjectVersion,
        verifier: RangeVerifier,
        *,
        on_replica: bool,
    ) -> AsyncGenerator[bytes, None]:
        """Stream a byte range (or a large whole object), each block it touches checked
        against its CRC32C before any of its bytes are sent. A block that fails
        marks the blob (as a failed whole read does) and, with a replica, the rest is
        read from the replica from that block on; otherwise the response is cut there:
        the client sees an aborted transfer, never a clean 206 with wrong bytes."""
        blobs = self._ctx.blobs
        try:
            while True:
                try:
                    async for chunk in stream:
                        for piece in verifier.feed(chunk):
                            self._ctx.metrics.bytes_out.inc(len(piece))
                            yield piece
                    verifier.finish()
                    return
                except BlockMismatch as exc:
                    block = exc.block
                    log.error(
                        "object %s/%s (%s): block %d [%d, %d) of blob %s failed its checksum"
                        " on a read%s", version.bucket, version.key, version.file_id,
                        block.index, block.start, block.end, version.blob_id,
                        " of the replica" if on_replica else "",
                    )  # fmt: skip
                    if not on_replica:
                        damage: Damage = "truncated" if exc.short else "corrupt"
                        await self._integrity.mark(version.blob_id, damage)
                    if on_replica or not isinstance(blobs, ReplicatedBlobStore):
                        raise ObjectCorrupted(
                            f"the stored data of {version.key!r} failed its checksum"
                            f" (block {block.index}, bytes {block.start}-{block.end - 1})"
                        ) from None
                    await stream.aclose()
                    verifier.restart()
                    on_replica = True
                    try:
                        stream = await blobs.open_replica(
                            version.blob_id, verifier.position, verifier.read_end
                        )
                    except (BlobNotFound, ValueError):
                        raise ObjectCorrupted(
                            f"the stored data of {version.key!r} failed its checksum"
                        ) from None
        finally:
            await stream.aclose()

    async def _counted(self, stream: ByteStream) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in stream:
                self._ctx.metrics.bytes_out.inc(len(chunk))
                yield chunk
        finally:
            await stream.aclose()

    async def _verified(
        self, stream: ByteStream, version: ObjectVersion, *, mark: bool
    ) -> AsyncGenerator[bytes, None]:
        """Stream a whole object while checking it against its recorded SHA-256 and size.

        The digest runs in a worker thread while the chunk is sent. A mismatch raises
        before the last byte goes out, so the client sees an aborted transfer (its
        Content-Length is never reached), never a clean response with wrong bytes.
        """
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256()
        size = 0
        hashing: asyncio.Future[None] | None = None
        held = b""  # the newest chunk, sent only once the next one (or the end) is seen
        try:
            # The stream is read to its end (not stopped at the expected size), so a
            # backend connection is never abandoned mid-body.
            async for chunk in stream:
                size += len(chunk)
                if size > version.size:
                    if mark:
                        await self._integrity.mark(version.blob_id, "corrupt")
                    raise ObjectCorrupted(f"the stored data of {version.key!r} is too long")
                if hashing is not None:
                    await hashing
                    hashing = None
                if len(chunk) < INLINE_HASH_BELOW:
                    digest.update(chunk)  # microseconds: cheaper than a thread hop
                else:
                    hashing = loop.run_in_executor(None, digest.update, chunk)
                if held:
                    self._ctx.metrics.bytes_out.inc(len(held))
                    yield held
                held = chunk
            if hashing is not None:
                await hashing
            if size != version.size or digest.hexdigest() != version.sha256:
                if mark:
                    damage: Damage = "truncated" if size < version.size else "corrupt"
                    await self._integrity.mark(version.blob_id, damage)
                log.error("object %s/%s (%s) failed its checksum on read", version.bucket,
                          version.key, version.file_id)  # fmt: skip
                raise ObjectCorrupted(f"the stored data of {version.key!r} failed its checksum")
            if held:
                self._ctx.metrics.bytes_out.inc(len(held))
                yield held
        finally:
            if hashing is not None:
                await asyncio.gather(hashing, return_exceptions=True)
            await stream.aclose()
