"""Bucket records for the checks a write makes before it reads its body.

Each small PUT read its bucket's row (existence, allowed file types) in a transaction
of its own, on a worker thread. The record changes rarely, so it is kept for
BUCKET_CACHE_SECONDS. Only what may be stale safely is kept: a change or delete
through this instance forgets the entry at once (BucketService); through another
instance sharing the index it is seen within BUCKET_CACHE_SECONDS, as token changes
are (TOKEN_CACHE_SECONDS). The commit still reads the bucket inside its own
transaction, so a write into a bucket deleted meanwhile is refused and nothing is
stored. Absent buckets are not cached: one created elsewhere is usable at once.
Object versions are never cached.
"""

from __future__ import annotations

import time
from typing import Final

import anyio.to_thread

from tfstorage.domain.records import Bucket
from tfstorage.index.object_index import ObjectIndex

BUCKET_CACHE_SECONDS: Final = 2.0
_MAX_ENTRIES: Final = 10_000


class BucketCache:
    def __init__(self, index: ObjectIndex, seconds: float = BUCKET_CACHE_SECONDS) -> None:
        self._index = index
        self._seconds = seconds
        self._entries: dict[str, tuple[float, Bucket]] = {}

    async def get(self, name: str) -> Bucket:
        """The bucket's record, at most `seconds` old; NoSuchBucket if absent now."""
        now = time.monotonic()
        cached = self._entries.get(name)
        if cached is not None and now - cached[0] < self._seconds:
            return cached[1]
        record = await anyio.to_thread.run_sync(self._index.get_bucket, name)
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[name] = (now, record)
        return record

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)
