"""`Storage`: every use-case over one index and one blob store, built from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio.to_thread

from tfstorage.blobs.base import BlobStore, BlobStoreUnavailable
from tfstorage.blobs.replicated import ReplicatedBlobStore, ReplicationReport
from tfstorage.blobs.tiered import TieredBlobStore
from tfstorage.config import Settings
from tfstorage.index.access import AccessIndex
from tfstorage.index.engine import create_index_engine, migrate
from tfstorage.index.jobs import JobIndex
from tfstorage.index.lifecycle import LifecycleIndex
from tfstorage.index.object_index import ObjectIndex
from tfstorage.index.uploads import UploadIndex
from tfstorage.metrics import Metrics
from tfstorage.service.access import AccessService
from tfstorage.service.backends import build_blob_store
from tfstorage.service.bucket_config import BucketConfigService
from tfstorage.service.buckets import BucketService
from tfstorage.service.context import StorageContext
from tfstorage.service.gc import GarbageCollector
from tfstorage.service.integrity import IntegrityChecker
from tfstorage.service.lifecycle import LifecycleService
from tfstorage.service.objects import ObjectCatalog
from tfstorage.service.reads import ObjectReader
from tfstorage.service.replication import Replication
from tfstorage.service.scrub import Scrubber
from tfstorage.service.startup_lock import startup_lock
from tfstorage.service.stats import StatsService
from tfstorage.service.uploads import UploadService
from tfstorage.service.writes import ObjectWriter

log = logging.getLogger(__name__)


@dataclass
class Storage:
    ctx: StorageContext
    writer: ObjectWriter
    uploads: UploadService
    reader: ObjectReader
    objects: ObjectCatalog
    buckets: BucketService
    gc: GarbageCollector
    stats: StatsService
    access: AccessService
    lifecycle: LifecycleService
    integrity: IntegrityChecker
    scrubber: Scrubber
    replication: Replication
    bucket_config: BucketConfigService
    # Set when the start-up maintenance run has ended (done or failed): tests that
    # write while an orphan sweep with no grace period could list their blobs wait on it.
    started_up: anyio.Event = field(default_factory=anyio.Event)

    @classmethod
    def from_context(cls, ctx: StorageContext, access_index: AccessIndex) -> Storage:
        return cls(
            ctx=ctx,
            writer=(writer := ObjectWriter(ctx)),
            uploads=UploadService(ctx, UploadIndex(ctx.index.engine), writer),
            reader=ObjectReader(ctx, checker := IntegrityChecker(ctx)),
            objects=ObjectCatalog(ctx),
            buckets=BucketService(ctx),
            gc=GarbageCollector(ctx),
            stats=StatsService(ctx),
            access=AccessService(ctx, access_index),
            lifecycle=LifecycleService(ctx, LifecycleIndex(ctx.index.engine)),
            integrity=checker,
            scrubber=Scrubber(ctx, checker),
            replication=Replication(ctx),
            bucket_config=BucketConfigService(ctx),
        )

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    async def run_maintenance(self) -> None:
        """Garbage collection, the audit log's retention, replica catch-up, the daily
        usage snapshot."""
        # Idle upload sessions first, so that this very run collects their parts.
        await self.uploads.expire_idle()
        await self.gc.run_once()
        report = await self.replicate()
        if report is not None and (report.copied or report.failed):
            log.info("replication: %s", report)
        # Blobs marked damaged by failed reads are repaired from the replica (if any).
        await self.integrity.repair_marked()
        cutoff = datetime.now(UTC) - timedelta(days=self.settings.retention_days)
        await self.access.purge_audit(cutoff)
        # Finished batch jobs are kept as long as the audit log.
        await self.ctx.db(JobIndex(self.ctx.index.engine).purge_jobs, cutoff)
        # Today's row of the usage history: an upsert, so every run (on any instance)
        # refreshes it and the day's last run stands.
        await self.stats.record_daily_snapshot()

    async def replicate(self, *, full: bool = False) -> ReplicationReport | None:
        """Catch the replica up (None without one); `full` compares every blob."""
        return await self.replication.run(full=full)

    async def close(self) -> None:
        await self.access.audit_log.flush()
        await self.scrubber.close()
        await self.integrity.close()
        await self.ctx.blobs.close()
        self.ctx.index.dispose()


async def open_storage(settings: Settings, *, blobs: BlobStore | None = None) -> Storage:
    """Open the index (applying migrations), the blob store and the standard buckets."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_index_engine(settings.index_url)
    await anyio.to_thread.run_sync(migrate, engine)
    ctx = StorageContext(
        settings=settings,
        index=ObjectIndex(engine),
        blobs=blobs or build_blob_store(settings),
        metrics=Metrics(),
    )
    storage = Storage.from_context(ctx, AccessIndex(engine))
    if await ctx.db(ctx.index.has_blobs):
        for store in _stores(ctx.blobs):
            if hasattr(store, "may_create_bucket"):
                store.may_create_bucket = False
    try:
        # Reaches the engine and, on S3, creates the physical bucket if it is missing.
        await ctx.blobs.check()
    except BlobStoreUnavailable as exc:
        # Serve anyway: reads and health answer 503 until the engine is back, and the
        # next successful check creates the bucket.
        log.warning("blob store unavailable at start-up: %s", exc.message)
    await storage.buckets.ensure_standard()
    async with startup_lock(settings.data_dir):  # one worker at a time (its docstring)
        await storage.access.bootstrap()
        await storage.replication.import_file_journal()
    return storage


def _stores(blobs: BlobStore) -> list[BlobStore]:
    if isinstance(blobs, ReplicatedBlobStore):
        return [*_stores(blobs.primary), blobs.replica]
    if isinstance(blobs, TieredBlobStore):
        return _stores(blobs.primary)  # the archive's bucket is created when first needed
    return [blobs]
