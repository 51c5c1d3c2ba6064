"""Storage statistics and health, from the index and the blob store's capacity."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tfstorage.blobs.base import Capacity
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.domain.records import IndexStats
from tfstorage.domain.usage import DailyUsage, UsageReport
from tfstorage.errors import InvalidArgument
from tfstorage.index.analytics import MAX_LARGEST, AnalyticsIndex
from tfstorage.index.usage import CounterCheck, UsageIndex

__all__ = ["CheckResult", "CounterCheck", "StatsService", "StorageReport", "StorageStats"]
from tfstorage.metrics import multiprocess_enabled
from tfstorage.service.context import StorageContext

MAX_HISTORY_DAYS = 365


@dataclass(frozen=True, slots=True)
class StorageStats:
    index: IndexStats
    capacity: Capacity


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StorageReport:
    usage: UsageReport
    capacity: Capacity


class StatsService:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        self._analytics = AnalyticsIndex(ctx.index.engine)
        self._usage = UsageIndex(ctx.index.engine)
        self._gauged: set[str] = set()  # buckets this process set per-bucket gauges of

    async def stats(self) -> StorageStats:
        index_stats = await self._ctx.db(self._ctx.index.stats)
        for bucket, usage in index_stats.buckets.items():
            self._ctx.metrics.usage_bytes.labels(bucket=bucket).set(usage.bytes)
        self._forget_gone(set(index_stats.buckets))
        return StorageStats(index_stats, await self._ctx.blobs.capacity())

    def _forget_gone(self, current: set[str]) -> None:
        """Deleted buckets leave the per-bucket gauges instead of keeping their last
        figures. With several workers the values live in files and cannot be removed:
        there they read 0."""
        metrics = self._ctx.metrics
        for gone in self._gauged - current:
            for gauge in (metrics.usage_bytes, metrics.objects):
                gauge.labels(bucket=gone).set(0)
                if not multiprocess_enabled():
                    gauge.remove(gone)
        self._gauged = current

    async def report(self, *, bucket: str | None = None, top: int = 10) -> StorageReport:
        """The usage report (from the index alone) and the blob store's free space."""
        if not 0 <= top <= MAX_LARGEST:
            raise InvalidArgument(f"top must be between 0 and {MAX_LARGEST}")
        usage = await self._ctx.db(self._analytics.usage_report, bucket=bucket, top=top)
        if bucket is None:
            for name, figures in usage.buckets.items():
                self._ctx.metrics.usage_bytes.labels(bucket=name).set(figures.live.bytes)
            self._forget_gone(set(usage.buckets))
        return StorageReport(usage, await self._ctx.blobs.capacity())

    async def check_counters(self) -> CounterCheck:
        """Recompute the usage counters from scratch (a scan) and compare."""
        return await self._ctx.db(self._usage.check)

    async def repair_counters(self) -> CounterCheck:
        """Rebuild the usage counters from a scan; returns what differed before."""
        return await self._ctx.db(self._usage.repair)

    async def record_daily_snapshot(self) -> None:
        """Upsert today's (UTC) row of the history: idempotent, any instance may run it."""
        now = datetime.now(UTC)
        usage = await self._ctx.db(self._analytics.usage_report, top=0)
        await self._ctx.db(self._analytics.record_snapshot, now.date(), usage, now)

    async def history(self, days: int, bucket: str | None = None) -> list[DailyUsage]:
        """The last `days` days (today included), oldest first."""
        if not 1 <= days <= MAX_HISTORY_DAYS:
            raise InvalidArgument(f"days must be between 1 and {MAX_HISTORY_DAYS}")
        since = datetime.now(UTC).date() - timedelta(days=days - 1)
        # A deleted bucket's history is still there: no existence check.
        return await self._ctx.db(self._analytics.usage_history, since, bucket)

    async def refresh_gauges(self) -> None:
        """Set the scrape-time gauges: backends up, live objects and bytes per bucket."""
        up = self._ctx.metrics.backend_up
        index = await self.check_index()
        up.labels(backend="index").set(int(index.ok))
        blobs = await self.check_blobs()
        primary, replica = blobs.detail.get("primary"), blobs.detail.get("replica")
        if isinstance(primary, dict) and isinstance(replica, dict):
            up.labels(backend="blob_store").set(int(bool(primary.get("ok"))))
            up.labels(backend="replica").set(int(bool(replica.get("ok"))))
        else:
            up.labels(backend="blob_store").set(int(blobs.ok))
        if index.ok:
            usage = await self.stats()
            for bucket, figures in usage.index.buckets.items():
                self._ctx.metrics.objects.labels(bucket=bucket).set(figures.objects)

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
