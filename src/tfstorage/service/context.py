"""What every use-case needs: settings, the index, the blob store, the metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import anyio.to_thread

from tfstorage.blobs.base import BlobStore
from tfstorage.config import Settings
from tfstorage.index.object_index import ObjectIndex
from tfstorage.metrics import Metrics

T = TypeVar("T")


@dataclass
class StorageContext:
    settings: Settings
    index: ObjectIndex
    blobs: BlobStore
    metrics: Metrics
    # Blobs whose bytes failed their checksum or size on read: with a replica they are
    # read from the replica, and an upload of the same content rewrites them.
    suspect_blobs: set[str] = field(default_factory=set)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one index call (one transaction) in a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs))
