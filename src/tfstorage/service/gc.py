"""Garbage collection: purge expired trash, then remove unreferenced and orphan blobs.

Deleting goes index first, bytes later (DESIGN.md): blob rows whose reference count
fell to zero are claimed (deleted) in one transaction, then their bytes removed. Blobs
with no row at all are orphans of uploads that crashed before their commit; they are
removed only after a grace period, so an upload between its blob write and its commit
is never touched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tfstorage.blobs.base import BlobInfo
from tfstorage.index.uploads import UploadIndex
from tfstorage.service.context import StorageContext

log = logging.getLogger(__name__)
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class GcReport:
    purged_versions: int = 0
    unreferenced_blobs: int = 0
    orphan_blobs: int = 0
    incomplete_writes: int = 0


class GarbageCollector:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx

    async def run_once(self, *, now: float | None = None) -> GcReport:
        now = time.time() if now is None else now
        settings = self._ctx.settings
        index = self._ctx.index
        cutoff = datetime.fromtimestamp(now, UTC) - timedelta(days=settings.retention_days)

        purged = 0
        while batch := await self._ctx.db(index.purge_deleted, cutoff, limit=_BATCH):
            purged += batch

        unreferenced = 0
        while claimed := await self._ctx.db(index.claim_unreferenced_blobs, limit=_BATCH):
            for blob_id in claimed:
                await self._ctx.blobs.delete(blob_id)
            unreferenced += len(claimed)

        grace_cutoff = now - settings.orphan_grace_seconds
        orphans = await self._sweep_orphans(grace_cutoff)
        # Multipart uploads of open sessions are kept, however old: they live until their
        # session completes, is aborted or expires (UPLOAD_SESSION_TTL_SECONDS).
        live = await self._ctx.db(UploadIndex(index.engine).live_backend_uploads)
        incomplete = await self._ctx.blobs.sweep_incomplete(grace_cutoff, live)

        report = GcReport(purged, unreferenced, orphans, incomplete)
        self._ctx.metrics.gc_blobs_removed.inc(unreferenced + orphans)
        if unreferenced or orphans or purged or incomplete:
            log.info("garbage collection: %s", report)
        return report

    async def _sweep_orphans(self, older_than: float) -> int:
        removed = 0
        batch: list[BlobInfo] = []
        async for info in self._ctx.blobs.list_blobs():
            if info.modified < older_than:
                batch.append(info)
            if len(batch) >= _BATCH:
                removed += await self._remove_unknown(batch)
                batch = []
        if batch:
            removed += await self._remove_unknown(batch)
        return removed

    async def _remove_unknown(self, batch: list[BlobInfo]) -> int:
        known = await self._ctx.db(self._ctx.index.known_blob_ids, [b.blob_id for b in batch])
        orphans = [b.blob_id for b in batch if b.blob_id not in known]
        for blob_id in orphans:
            await self._ctx.blobs.delete(blob_id)
        return len(orphans)
