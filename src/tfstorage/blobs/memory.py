"""A dict-backed `BlobStore` for tests: the same semantics as the real backends."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator

import anyio.lowlevel

from tfstorage.blobs.base import BlobInfo, BlobNotFound, ByteStream, Capacity, is_blob_id

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

    async def sweep_incomplete(self, older_than: float) -> int:
        # Unfinished puts live only in their own task's locals: nothing is ever left over.
        return 0

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
