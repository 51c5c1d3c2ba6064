"""Replica catch-up across instances: the journal in the index, one runner at a time.

The replicated blob store queues what it could not copy in a `ReplicaJournal`; here that
journal is the index's `replica_journal` table, so whichever instance runs maintenance
next catches up what any instance queued, also one that is gone for good. A lease (the
index's `leases` row "replication", renewed every page) lets one instance at a time work
it off; a runner that dies leaves the lease to lapse after `LEASE_SECONDS`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from tfstorage.blobs.base import is_blob_id
from tfstorage.blobs.replicated import JournalEntry, ReplicatedBlobStore, ReplicationReport
from tfstorage.index.lifecycle import LifecycleIndex
from tfstorage.index.replica_journal import OPERATIONS, ReplicaJournalIndex
from tfstorage.service.context import StorageContext

log = logging.getLogger(__name__)

LEASE: Final = "replication"
LEASE_SECONDS: Final = 60.0
# Where releases before the index journal kept it: imported once at start-up.
FILE_JOURNAL: Final = "replica-pending.log"


class IndexJournal:
    """`blobs.replicated.ReplicaJournal` over the index."""

    def __init__(self, ctx: StorageContext, index: ReplicaJournalIndex) -> None:
        self._ctx = ctx
        self._index = index
        self._leases = LifecycleIndex(index.engine)
        self.lease_holder: str | None = None  # set while this instance runs a catch-up

    async def add(self, operation: str, blob_id: str) -> None:
        await self._ctx.db(self._index.add, [(operation, blob_id)])

    async def pending(self) -> int:
        return await self._ctx.db(self._index.pending)

    async def entries(self, after: int, limit: int) -> list[JournalEntry]:
        holder = self.lease_holder
        if holder is not None and not await self._ctx.db(
            self._leases.acquire_lease, LEASE, holder, LEASE_SECONDS
        ):
            log.warning("replication: lease lost to another instance; stopping here")
            return []
        rows = await self._ctx.db(self._index.entries, after, limit)
        return [JournalEntry(seq, operation, blob_id) for seq, operation, blob_id in rows]

    async def remove(self, seqs: Collection[int]) -> None:
        await self._ctx.db(self._index.remove, seqs)


class Replication:
    """Catch-up runs of a replicated store (a no-op without a replica)."""

    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        self.instance = uuid.uuid4().hex[:16]
        self.journal: IndexJournal | None = None
        if isinstance(ctx.blobs, ReplicatedBlobStore):
            self.journal = IndexJournal(ctx, ReplicaJournalIndex(ctx.index.engine))
            ctx.blobs.journal = self.journal

    async def import_file_journal(self) -> int:
        """Move a `DATA_DIR/replica-pending.log` (and runs of it caught mid-drain) left by
        an older release into the index; the files go once their entries are in."""
        if self.journal is None:
            return 0
        data_dir = self._ctx.settings.data_dir
        paths = sorted(data_dir.glob(FILE_JOURNAL + ".*.draining"))
        if (data_dir / FILE_JOURNAL).exists():
            paths.append(data_dir / FILE_JOURNAL)
        if not paths:
            return 0
        entries = await anyio.to_thread.run_sync(_read_file_journal, paths)
        await self._ctx.db(ReplicaJournalIndex(self._ctx.index.engine).add, entries)
        for path in paths:
            path.unlink(missing_ok=True)
        (data_dir / (FILE_JOURNAL + ".lock")).unlink(missing_ok=True)
        log.info("replication: %d queued entries moved from %s into the index", len(entries),
                 FILE_JOURNAL)  # fmt: skip
        return len(entries)

    async def run(self, *, full: bool = False) -> ReplicationReport | None:
        """Catch the replica up; "busy" when another instance is doing it."""
        blobs = self._ctx.blobs
        if not isinstance(blobs, ReplicatedBlobStore) or self.journal is None:
            return None
        holder = f"{self.instance}:{uuid.uuid4().hex[:8]}"
        leases = LifecycleIndex(self._ctx.index.engine)
        if not await self._ctx.db(leases.acquire_lease, LEASE, holder, LEASE_SECONDS):
            return ReplicationReport(busy=True)
        self.journal.lease_holder = holder
        try:
            return await blobs.replicate(full=full)
        finally:
            self.journal.lease_holder = None
            with anyio.CancelScope(shield=True):
                await self._ctx.db(leases.release_lease, LEASE, holder)


def _read_file_journal(paths: list[Path]) -> list[tuple[str, str]]:
    entries = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            operation, _, blob_id = line.partition(" ")
            if operation in OPERATIONS and is_blob_id(blob_id):
                entries.append((operation, blob_id))
    return entries
