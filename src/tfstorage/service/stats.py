"""Storage statistics and health, from the index and the blob store's capacity."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tfstorage.blobs.base import Capacity
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.domain.records import IndexStats
from tfstorage.service.context import StorageContext


@dataclass(frozen=True, slots=True)
class StorageStats:
    index: IndexStats
    capacity: Capacity


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: dict[str, Any]


class StatsService:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx

    async def stats(self) -> StorageStats:
        index_stats = await self._ctx.db(self._ctx.index.stats)
        for bucket, usage in index_stats.buckets.items():
            self._ctx.metrics.usage_bytes.labels(bucket=bucket).set(usage.bytes)
        return StorageStats(index_stats, await self._ctx.blobs.capacity())

    async def check_index(self) -> CheckResult:
        start = time.perf_counter()
        try:
            await self._ctx.db(self._ctx.index.ping)
        except Exception as exc:
            return CheckResult(False, {"error": type(exc).__name__})
        backend = self._ctx.index.dialect
        return CheckResult(True, {"backend": backend, "ms": _ms(start)})

    async def check_blobs(self) -> CheckResult:
        start = time.perf_counter()
        blobs = self._ctx.blobs
        detail: dict[str, Any] = {"type": blobs.name}
        describe = getattr(blobs, "describe", None)
        if describe is not None:  # engine, endpoint, bucket (never credentials)
            detail.update(describe())
        if isinstance(blobs, ReplicatedBlobStore):
            detail.update(await blobs.health())
        try:
            await blobs.check()
        except Exception as exc:
            detail["error"] = getattr(exc, "message", type(exc).__name__)
            return CheckResult(False, detail)
        detail["ms"] = _ms(start)
        return CheckResult(True, detail)

    async def check_disk(self, min_free_fraction: float = 0.05) -> CheckResult:
        capacity = await self._ctx.blobs.capacity()
        if capacity.total_bytes is None or capacity.free_bytes is None:
            return CheckResult(True, {"known": False})
        fraction = capacity.free_bytes / capacity.total_bytes if capacity.total_bytes else 0.0
        return CheckResult(
            fraction >= min_free_fraction,
            {
                "total_bytes": capacity.total_bytes,
                "free_bytes": capacity.free_bytes,
                "free_percentage": round(fraction * 100, 1),
            },
        )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
