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
    reads_inline: bool = field(init=False)  # see read_now

    def __post_init__(self) -> None:
        self.integrity = IntegrityIndex(self.index.engine)
        self.bucket_cache = BucketCache(self.index)
        self.reads_inline = self.index.engine.dialect.name == "sqlite"

    async def read_now(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A one-statement read of the index on SQLite runs here, on the event loop: it
        takes tens of microseconds (WAL readers never wait for a writer), less than the
        hop to a worker thread and back would. PostgreSQL's round trip goes to a thread."""
        if self.reads_inline:
            return fn(*args, **kwargs)
        return await self.db(fn, *args, **kwargs)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one index call (one transaction) in a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
