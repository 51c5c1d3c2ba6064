"""What every use-case needs: settings, the index, the blob store, the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from tfstorage.blobs.base import BlobStore
from tfstorage.config import Settings
from tfstorage.index.integrity import IntegrityIndex
from tfstorage.index.object_index import ObjectIndex
from tfstorage.metrics import Metrics
from tfstorage.service.bucket_cache import BucketCache

T = TypeVar("T")


@dataclass
class StorageContext:
    settings: Settings
    index: ObjectIndex
    blobs: BlobStore
    metrics: Metrics
    # Blobs whose bytes failed their checksum or size are marked in the index (not in
    # memory), so every instance refuses them, or reads them from the replica.
    integrity: IntegrityIndex = field(init=False)
    bucket_cache: BucketCache = field(init=False)

    def __post_init__(self) -> None:
        self.integrity = IntegrityIndex(self.index.engine)
        self.bucket_cache = BucketCache(self.index)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one index call (one transaction) in a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
