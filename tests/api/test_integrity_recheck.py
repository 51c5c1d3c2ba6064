"""A copy is called missing only when it is still absent on a second look: one transient
404 from a loaded engine would otherwise mark a good blob and make its downloads fail."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from tfstorage.blobs.base import BlobNotFound, ByteStream
from tfstorage.blobs.memory import MemoryBlobStore
from tfstorage.index.integrity import StoredBlob
from tfstorage.service.integrity import check_copy

pytestmark = pytest.mark.anyio

DATA = b"checkpoint bytes " * 100


class FlakyStore(MemoryBlobStore):
    """A real in-memory store whose first `misses` opens answer "not found"."""

    def __init__(self, misses: int) -> None:
        super().__init__()
        self.misses = misses
        self.opens = 0

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        self.opens += 1
        if self.opens <= self.misses:
            raise BlobNotFound(blob_id)
        return await super().open(blob_id, start, end)


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _expected() -> StoredBlob:
    md5 = hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    return StoredBlob("b" * 32, len(DATA), md5, hashlib.sha256(DATA).hexdigest())


@pytest.mark.parametrize(("misses", "status"), [(0, "ok"), (1, "ok"), (2, "missing")])
async def test_one_transient_not_found_is_not_a_missing_copy(misses: int, status: str) -> None:
    store = FlakyStore(misses)
    await store.put("b" * 32, _one(DATA))
    check = await check_copy(store, _expected())
    assert check.status == status
    assert store.opens == min(misses + 1, 2)
