"""The `BlobStore` protocol every backend implements, and its value types."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tfstorage.errors import ServiceUnavailable


class ByteStream(Protocol):
    """An async iterator of chunks that can be closed early to release its resources."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def __anext__(self) -> Awaitable[bytes]: ...

    def aclose(self) -> Awaitable[None]: ...


def new_blob_id() -> str:
    """A fresh opaque blob id: 32 lowercase hex characters, never derived from a name."""
    return secrets.token_hex(16)


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
        The returned iterator yields chunks of up to about 1 MiB; closing it early
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

    async def sweep_incomplete(self, older_than: float) -> int:
        """Remove leftovers of interrupted writes started before `older_than` (epoch
        seconds): temp files, dangling multipart uploads. Returns how many went."""
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
