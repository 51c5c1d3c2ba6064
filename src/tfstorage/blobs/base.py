"""The `BlobStore` protocol every backend implements, and its value types."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE, BlockChecksums
from tfstorage.domain.ids import random_hex
from tfstorage.errors import BadDigest, ServiceUnavailable


class ByteStream(Protocol):
    """An async iterator of chunks that can be closed early to release its resources."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def __anext__(self) -> Awaitable[bytes]: ...

    def aclose(self) -> Awaitable[None]: ...


def new_blob_id() -> str:
    """A fresh opaque blob id: 32 lowercase hex characters, never derived from a name."""
    return random_hex(16)


def is_blob_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


class BlobNotFound(FileNotFoundError):
    """The blob does not exist in this store."""

    def __init__(self, blob_id: str):
        super().__init__(f"blob {blob_id} not found")
        self.blob_id = blob_id


class BlobStoreUnavailable(ServiceUnavailable):
    """The backend cannot be reached or failed; the operation did not happen."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    blob_id: str
    size: int
    modified: float  # seconds since the epoch, for orphan grace periods


@dataclass(frozen=True, slots=True)
class Capacity:
    total_bytes: int | None  # None when the backend cannot tell (most S3 engines)
    free_bytes: int | None


# The largest chunk a blob stream yields: big enough that a 1 GiB read is not paced by
# per-chunk overhead (1 MiB chunks capped a warm GET at ~320 MiB/s, 4 MiB ones reach
# ~450), small enough that a few readers stay within a worker's memory budget.
MAX_READ_CHUNK = 4 * 1024 * 1024

MISMATCH = "the SHA-256 of the assembled object does not match the one declared"


class DigestMismatch(BadDigest):
    """The assembled bytes do not hash to the SHA-256 expected: nothing was stored under
    the blob id. `parts_consumed`: the parts are gone too (S3 completed its upload)."""

    def __init__(self, message: str, *, parts_consumed: bool) -> None:
        super().__init__(message)
        self.parts_consumed = parts_consumed


@dataclass(frozen=True, slots=True)
class StoredPart:
    """One part of a multipart blob, as the store holds it."""

    part_number: int
    size: int
    handle: str  # the store's name for these bytes: S3's part ETag, a file name on disk


@dataclass(frozen=True, slots=True)
class AssembledBlob:
    """A multipart blob once assembled: durable under its blob id, with its real digests
    (of the whole bytes, not S3's MD5 of MD5s)."""

    size: int
    md5: str
    sha256: str
    # True when assembling used the parts up (S3 completes the engine's upload); False
    # when they stay until `abort_multipart`, so a refused result can be retried.
    parts_consumed: bool
    blocks: BlockChecksums | None = None  # hashed in the same pass as the digests


@runtime_checkable
class BlobStore(Protocol):
    """Where the bytes live. Every method is safe to call concurrently.

    Ranges are end-exclusive (`start <= offset < end`), as in obstore.
    """

    name: str  # "local", "s3", ... for health and logs

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        """Store `chunks` under `blob_id` and return the number of bytes written.

        Returns only once the bytes are durable. If `chunks` raises, or the write
        fails, nothing is left under `blob_id` and the exception propagates.
        """
        ...

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        """Open the blob for reading bytes `[start, end)` (`end=None`: to the end).

        Raises `BlobNotFound` here, before any byte is produced, if it does not exist.
        The returned iterator yields chunks of at most 4 MiB; closing it early
        (`aclose`) releases the underlying file or connection.
        """
        ...

    async def stat(self, blob_id: str) -> BlobInfo:
        """Size and modification time; raises `BlobNotFound`."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove the blob. Deleting a missing blob is not an error."""
        ...

    def list_blobs(self) -> AsyncIterator[BlobInfo]:
        """Every stored blob (for garbage collection), in no particular order."""
        ...

    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        """Remove leftovers of interrupted writes started before `older_than` (epoch
        seconds): temp files, dangling multipart uploads. Multipart uploads whose handle
        is in `keep` (live upload sessions) are never touched. Returns how many went."""
        ...

    # Multipart blobs: parts stored one by one, in any order, then assembled. ----------
    async def begin_multipart(self, blob_id: str) -> str:
        """Start a multipart blob that will be stored as `blob_id`; returns its upload
        handle (S3: the engine's upload id). Nothing is visible under `blob_id` yet."""
        ...

    async def put_part(
        self,
        blob_id: str,
        upload: str,
        part_number: int,
        chunks: AsyncIterable[bytes],
        *,
        size: int,
        md5: str | None = None,
        sha256: str | None = None,
        offset: int | None = None,
    ) -> StoredPart:
        """Store part `part_number` (1..10000) from `chunks`, exactly `size` bytes;
        durable when this returns. A later part of the same number replaces it.

        `offset` is a hint: where the part will sit in the assembled blob if the parts
        before it have their expected sizes. A store may write the part there directly
        (local disk), so that assembling needs no second copy of the bytes.

        `md5` / `sha256` (hex) are digests the client declared: a store whose engine can
        check them does, raising `BadDigest` with an earlier part of the number intact.
        If `chunks` raises, the exception propagates and no new part is recorded.
        """
        ...

    async def discard_part(self, blob_id: str, upload: str, part: StoredPart) -> bool:
        """Remove a stored part that turned out to be unwanted (its digest did not match).
        Returns whether an earlier part of the same number survives: False on stores
        that replace parts in place (S3), where the earlier one is gone too."""
        ...

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        """Assemble `parts` (ascending, as stored) into `blob_id`, durable and readable
        when this returns, and compute the whole blob's MD5, SHA-256 and block checksums
        (of `block_size`) in one pass (memory stays bounded whatever the sizes). A crash
        before it returns leaves at most an orphan.

        If the SHA-256 is not `expected_sha256`, raises `DigestMismatch` with nothing
        stored under `blob_id`."""
        ...

    async def abort_multipart(self, blob_id: str, upload: str) -> None:
        """Remove every part of the upload (and the upload itself). Idempotent; the
        assembled blob, if any, is not touched."""
        ...

    async def capacity(self) -> Capacity:
        """Total and free bytes where the backend can tell."""
        ...

    async def check(self) -> None:
        """Raise `BlobStoreUnavailable` if the backend cannot serve requests now."""
        ...

    async def close(self) -> None:
        """Release connections and threads."""
        ...


class PartsOnPrimary:
    """Multipart uploads for a store layered over another (a replica, an archive tier):
    the parts go to `primary` only; the assembled blob is then an ordinary blob there."""

    primary: BlobStore

    async def begin_multipart(self, blob_id: str) -> str:
        return await self.primary.begin_multipart(blob_id)

    async def put_part(
        self,
        blob_id: str,
        upload: str,
        part_number: int,
        chunks: AsyncIterable[bytes],
        *,
        size: int,
        md5: str | None = None,
        sha256: str | None = None,
        offset: int | None = None,
    ) -> StoredPart:
        return await self.primary.put_part(
            blob_id, upload, part_number, chunks, size=size, md5=md5, sha256=sha256, offset=offset
        )

    async def discard_part(self, blob_id: str, upload: str, part: StoredPart) -> bool:
        return await self.primary.discard_part(blob_id, upload, part)

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        return await self.primary.complete_multipart(
            blob_id, upload, parts, expected_sha256=expected_sha256, block_size=block_size
        )

    async def abort_multipart(self, blob_id: str, upload: str) -> None:
        await self.primary.abort_multipart(blob_id, upload)
