"""The pack store: the blob contract with small (packed) and big (file) blobs, and what
is particular to packs: group syncs, torn tails, the index rebuilt from the packs,
compaction, several processes on one root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.blobs.contract import BlobStoreContract, MultipartContract
from tfstorage.blobs import BlobStore
from tfstorage.blobs.packs import PackedBlobStore

KiB = 1024
MiB = 1024 * KiB


class TestPackedBlobStore(BlobStoreContract, MultipartContract):
    """Blobs up to 4 MiB packed: nearly every blob of the contract goes into packs."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = PackedBlobStore(tmp_path / "blobs", threshold=4 * MiB, pack_size=8 * MiB)
        yield store
        await store.close()


class TestPackedBlobStoreDefaultThreshold(BlobStoreContract):
    """The default threshold (64 KiB): small blobs packed, big ones files."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = PackedBlobStore(tmp_path / "blobs")
        yield store
        await store.close()
