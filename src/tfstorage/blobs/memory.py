"""A dict-backed `BlobStore` for tests: the same semantics as the real backends."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Collection, Sequence

import anyio.lowlevel

from tfstorage.blobs.base import (
    MISMATCH,
    AssembledBlob,
    BlobInfo,
    BlobNotFound,
    ByteStream,
    Capacity,
    DigestMismatch,
    StoredPart,
    is_blob_id,
)
from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE, block_checksums_of
from tfstorage.errors import InvalidPart

MiB = 1024 * 1024


class MemoryBlobStore:
    """Blobs as immutable `bytes` in a dict.

    A put becomes visible only once its iterator is exhausted, and readers slice the
    `bytes` they found at open time, so a delete never disturbs a reader already open.
    """

    name = "memory"

    def __init__(self, *, read_chunk_size: int = MiB) -> None:
        if read_chunk_size < 1:
            raise ValueError("read_chunk_size must be positive")
        self._read_chunk_size = read_chunk_size
        self._blobs: dict[str, tuple[bytes, float]] = {}
        # upload handle -> (begun at, part handle -> bytes); parts live until aborted.
        self._uploads: dict[str, tuple[float, dict[str, bytes]]] = {}

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        _check_id(blob_id)
        parts = [bytes(chunk) async for chunk in chunks]
        data = b"".join(parts)
        self._blobs[blob_id] = (data, time.time())
        return len(data)

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        data = self._get(blob_id)[0]
        if end is None:
            end = len(data)
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"invalid range [{start}, {end}) for a blob of {len(data)} bytes")
        return _slices(data, start, end, self._read_chunk_size)

    async def stat(self, blob_id: str) -> BlobInfo:
        data, modified = self._get(blob_id)
        return BlobInfo(blob_id=blob_id, size=len(data), modified=modified)

    async def delete(self, blob_id: str) -> None:
        _check_id(blob_id)
        self._blobs.pop(blob_id, None)

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        # A snapshot, so puts and deletes during the listing cannot break the iteration.
        for blob_id, (data, modified) in list(self._blobs.items()):
            yield BlobInfo(blob_id=blob_id, size=len(data), modified=modified)

    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        # Unfinished puts live only in their own task's locals: nothing is ever left over.
        dropped = [
            upload
            for upload, (begun, _) in self._uploads.items()
            if upload not in keep and begun < older_than
        ]
        for upload in dropped:
            del self._uploads[upload]
        return len(dropped)

    async def begin_multipart(self, blob_id: str) -> str:
        _check_id(blob_id)
        upload = f"{blob_id}-{secrets.token_hex(8)}"
        self._uploads[upload] = (time.time(), {})
        return upload

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
        parts = self._parts(blob_id, upload)
        data = b"".join([bytes(chunk) async for chunk in chunks])
        handle = f"{part_number}-{secrets.token_hex(8)}"
        parts[handle] = data
        return StoredPart(part_number, len(data), handle)

    async def discard_part(self, blob_id: str, upload: str, part: StoredPart) -> bool:
        self._parts(blob_id, upload).pop(part.handle, None)
        return True

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        stored = self._parts(blob_id, upload)
        try:
            data = b"".join(stored[part.handle] for part in parts)
        except KeyError:
            raise InvalidPart("a part of the upload is no longer stored") from None
        sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise DigestMismatch(MISMATCH, parts_consumed=False)
        self._blobs[blob_id] = (data, time.time())
        return AssembledBlob(
            size=len(data),
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            sha256=sha256,
            parts_consumed=False,
            blocks=block_checksums_of(data, block_size),
        )

    async def abort_multipart(self, blob_id: str, upload: str) -> None:
        _check_id(blob_id)
        self._uploads.pop(upload, None)

    def _parts(self, blob_id: str, upload: str) -> dict[str, bytes]:
        _check_id(blob_id)
        try:
            return self._uploads[upload][1]
        except KeyError:
            raise InvalidPart("the blob store has no such multipart upload") from None

    async def capacity(self) -> Capacity:
        return Capacity(total_bytes=None, free_bytes=None)

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _get(self, blob_id: str) -> tuple[bytes, float]:
        _check_id(blob_id)
        try:
            return self._blobs[blob_id]
        except KeyError:
            raise BlobNotFound(blob_id) from None


def _check_id(blob_id: str) -> None:
    # The same refusal as the other backends, so tests against memory catch bad ids too.
    if not (isinstance(blob_id, str) and is_blob_id(blob_id)):
        raise ValueError("malformed blob id")


async def _slices(
    data: bytes, start: int, end: int, chunk_size: int
) -> AsyncGenerator[bytes, None]:
    view = memoryview(data)
    for offset in range(start, end, chunk_size):
        # Yield to the loop between chunks, as a real backend would while waiting on I/O.
        await anyio.lowlevel.checkpoint()
        yield bytes(view[offset : min(offset + chunk_size, end)])
