from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.blobs.contract import BlobStoreContract, MultipartContract, chunked
from tfstorage.blobs import BlobStore, new_blob_id
from tfstorage.blobs.memory import MemoryBlobStore


class TestMemoryBlobStore(BlobStoreContract, MultipartContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[BlobStore]:
        store = MemoryBlobStore()
        yield store
        await store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("bad_id", ["", "../x", "AB" * 16, "ab" * 15, "ab" * 17])
async def test_malformed_ids_are_refused(bad_id: str) -> None:
    store = MemoryBlobStore()
    with pytest.raises(ValueError):
        await store.put(bad_id, chunked(b"x"))
    for operation in (store.open, store.stat, store.delete):
        with pytest.raises(ValueError):
            await operation(bad_id)


@pytest.mark.anyio
async def test_put_copies_mutable_chunks() -> None:
    store = MemoryBlobStore()
    buffer = bytearray(b"aaaa")

    async def reused() -> AsyncIterator[bytes]:
        yield buffer  # type: ignore[misc]
        buffer[:] = b"bbbb"
        yield buffer  # type: ignore[misc]

    blob_id = new_blob_id()
    await store.put(blob_id, reused())
    stream = await store.open(blob_id)
    assert b"".join([chunk async for chunk in stream]) == b"aaaabbbb"
