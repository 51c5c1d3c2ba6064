"""Proving stored bytes: re-read a blob, compare MD5, SHA-256 and size with the index,
mark what is damaged, and repair from the other copy when a replica holds a good one.

The index's checksums are the truth. A repair only ever copies bytes that hash to them
(checked while they are copied, and once more where they landed); nothing here ever
recomputes a checksum from stored bytes and writes it back over one. The one thing
written from stored bytes is what is missing: the block checksums of a blob recorded
before they existed (revision 0008), computed in the same read and recorded only when
those bytes matched the blob's SHA-256, MD5 and size, and only where none are set yet.

With block checksums, a damaged copy's report names its damaged blocks (index and byte
offsets), so an operator knows which part of a file went bad.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import anyio
import anyio.to_thread

from tfstorage.blobs.base import BlobNotFound, BlobStore, BlobStoreUnavailable, ByteStream
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.domain.blocks import BlockChecksums, BlockHasher, DamagedBlock
from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import StorageError
from tfstorage.index.integrity import DAMAGES, Damage, StoredBlob
from tfstorage.index.reads import utcnow
from tfstorage.service.context import StorageContext

log = logging.getLogger(__name__)

Status = Literal["ok", "corrupt", "truncated", "missing"]
# Called with each chunk's length as it is read: the scrub's rate limit.
Throttle = Callable[[int], Awaitable[None]]
# Damaged blocks named per verification; a truncated blob may have thousands.
LISTED_BLOCKS = 100


@dataclass(frozen=True, slots=True)
class Digest:
    md5: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class CopyCheck:
    """One stored copy compared with the index."""

    status: Status
    actual: Digest | None  # None when the copy is missing
    blocks: BlockChecksums | None = None  # of the copy's bytes, as read


@dataclass(frozen=True, slots=True)
class Verdict:
    """A blob's verification: what its primary copy was found to be, what was repaired.

    `replica` is None without a replica, or "unavailable" when it could not be read.
    """

    blob: StoredBlob
    primary: CopyCheck
    repaired: bool  # the primary was rewritten from the replica and now verifies
    replica: str | None = None
    replica_repaired: bool = False
    # The primary's blocks that differ from the index's block checksums (the first
    # LISTED_BLOCKS of them), and how many differ; empty without block checksums.
    damaged_blocks: tuple[DamagedBlock, ...] = ()
    damaged_block_count: int = 0
    blocks_recorded: bool = False  # block checksums were missing and are recorded now

    @property
    def ok(self) -> bool:
        """The primary copy matches the index now (as found, or after its repair)."""
        return self.primary.status == "ok" or self.repaired


def expected_of(version: ObjectVersion) -> StoredBlob:
    return StoredBlob(version.blob_id, version.size, version.etag, version.sha256)


def _status(expected: StoredBlob, actual: Digest) -> Status:
    if actual.size < expected.size:
        return "truncated"
    if (actual.size, actual.md5, actual.sha256) != (expected.size, expected.md5, expected.sha256):
        return "corrupt"
    return "ok"


def _update(
    md5: hashlib._Hash, sha256: hashlib._Hash, chunk: bytes, blocks: BlockHasher | None = None
) -> None:
    md5.update(chunk)
    sha256.update(chunk)
    if blocks is not None:
        blocks.update(chunk)


async def check_copy(
    store: BlobStore,
    expected: StoredBlob,
    throttle: Throttle | None = None,
    *,
    block_size: int | None = None,
) -> CopyCheck:
    """Read one copy whole and compare it with the index; with `block_size`, also hash
    its blocks (for naming damaged ones, or recording missing checksums). An engine
    that cannot be reached raises `BlobStoreUnavailable`: that is not damage."""
    try:
        stream = await store.open(expected.blob_id)
    except BlobNotFound:
        return CopyCheck("missing", None)
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    blocks = None if block_size is None else BlockHasher(block_size)
    size = 0
    try:
        async for chunk in stream:
            size += len(chunk)
            # hashlib releases the GIL: the event loop keeps serving while this runs.
            await anyio.to_thread.run_sync(_update, md5, sha256, chunk, blocks)
            if throttle is not None:
                await throttle(len(chunk))
    except BlobNotFound:
        return CopyCheck("missing", None)  # deleted while being read
    finally:
        await stream.aclose()
    actual = Digest(md5.hexdigest(), sha256.hexdigest(), size)
    return CopyCheck(_status(expected, actual), actual, blocks.result() if blocks else None)


class _Mismatch(Exception):
    pass


async def _checked(source: ByteStream, expected: StoredBlob) -> AsyncGenerator[bytes, None]:
    """The source's bytes, raising before the last chunk if they do not hash to the
    index's checksums, so that the target store's `put` keeps nothing of them."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    held: bytes | None = None
    async for chunk in source:
        size += len(chunk)
        if size > expected.size:
            raise _Mismatch
        await anyio.to_thread.run_sync(_update, md5, sha256, chunk)
        if held is not None:
            yield held
        held = chunk
    if _status(expected, Digest(md5.hexdigest(), sha256.hexdigest(), size)) != "ok":
        raise _Mismatch
    if held is not None:
        yield held


async def copy_verified(source: BlobStore, target: BlobStore, expected: StoredBlob) -> bool:
    """Rewrite the target's copy from the source's, only if the source's bytes are
    right, and confirm where they landed. False when the source is bad or missing."""
    try:
        stream = await source.open(expected.blob_id)
    except BlobNotFound:
        return False
    try:
        await target.put(expected.blob_id, _checked(stream, expected))
    except (_Mismatch, BlobNotFound):
        return False
    finally:
        await stream.aclose()
    return (await check_copy(target, expected)).status == "ok"


class IntegrityChecker:
    """Verifies blobs against the index, marks and unmarks them, repairs from replicas."""

    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        # Background verifications of blobs a read found damaged, by blob id.
        self._confirming: dict[str, asyncio.Task[None]] = {}
        self._scopes: set[anyio.CancelScope] = set()  # theirs, cancelled at shutdown

    @property
    def _stores(self) -> tuple[BlobStore, BlobStore | None]:
        blobs = self._ctx.blobs
        if isinstance(blobs, ReplicatedBlobStore):
            return blobs.primary, blobs.replica
        return blobs, None

    async def verify_version(self, version: ObjectVersion, *, repair: bool = True) -> Verdict:
        # The index's blob row, for its block checksums.
        stored = await self._ctx.db(self._ctx.integrity.stored_blob, version.blob_id)
        return await self.verify_blob(stored or expected_of(version), repair=repair)

    async def verify_blob(
        self, blob: StoredBlob, *, repair: bool = True, throttle: Throttle | None = None
    ) -> Verdict:
        primary_store, replica_store = self._stores
        metered = self._metered(throttle)
        began = utcnow()
        # Blocks of the size recorded, or, for a blob recorded without them, of the size
        # new blobs get: then they can be filled in from this same read.
        block_size = blob.blocks.block_size if blob.blocks else self._ctx.settings.block_size
        primary = await check_copy(primary_store, blob, metered, block_size=block_size)
        replica: str | None = None
        replica_check: CopyCheck | None = None
        if replica_store is not None:
            try:
                replica_check = await check_copy(
                    replica_store, blob, metered, block_size=block_size
                )
                replica = replica_check.status
            except BlobStoreUnavailable as exc:
                log.warning("integrity: replica unreadable for %s (%s)", blob.blob_id, exc.message)
                replica = "unavailable"
        repaired = replica_repaired = False
        if repair and replica_store is not None:
            if primary.status != "ok" and replica == "ok":
                repaired = await copy_verified(replica_store, primary_store, blob)
            elif primary.status == "ok" and replica not in ("ok", "unavailable"):
                replica_repaired = await copy_verified(primary_store, replica_store, blob)
        damaged: list[DamagedBlock] = []
        if blob.blocks is not None and primary.status != "ok" and primary.blocks is not None:
            damaged = blob.blocks.damaged(primary.blocks, blob.size)
        recorded = False
        if blob.blocks is None:
            good = primary if primary.status == "ok" else replica_check
            if good is not None and good.status == "ok" and good.blocks is not None:
                recorded = await self._ctx.db(
                    self._ctx.integrity.record_block_checksums,
                    blob.blob_id,
                    blob.sha256,
                    good.blocks,
                )
        verdict = Verdict(
            blob,
            primary,
            repaired,
            replica,
            replica_repaired,
            damaged_blocks=tuple(damaged[:LISTED_BLOCKS]),
            damaged_block_count=len(damaged),
            blocks_recorded=recorded,
        )
        await self._record(verdict, began)
        return verdict

    def _metered(self, throttle: Throttle | None) -> Throttle:
        counter = self._ctx.metrics.integrity_bytes

        async def metered(n: int) -> None:
            counter.inc(n)
            if throttle is not None:
                await throttle(n)

        return metered

    async def _record(self, verdict: Verdict, began: datetime) -> None:
        metrics = self._ctx.metrics
        integrity = self._ctx.integrity
        blob_id = verdict.blob.blob_id
        metrics.integrity_blobs_verified.inc()
        if verdict.primary.status != "ok":
            metrics.integrity_damage_found.labels(damage=verdict.primary.status).inc()
            where = ", ".join(
                f"block {b.index} [{b.start}, {b.end})" for b in verdict.damaged_blocks[:5]
            )
            blocks = f" ({verdict.damaged_block_count} damaged blocks: {where})" if where else ""
            log.error("integrity: blob %s is %s%s", blob_id, verdict.primary.status, blocks)
        if verdict.blocks_recorded:
            log.info("integrity: recorded the block checksums of blob %s", blob_id)
        if verdict.repaired or verdict.replica_repaired:
            metrics.integrity_repaired.inc()
            log.warning(
                "integrity: repaired the %s copy of blob %s",
                "primary" if verdict.repaired else "replica", blob_id,
            )  # fmt: skip
        # Each verdict is about the bytes as this check read them, from `began`: a
        # newer finding (or a rewrite by a new upload of the same content) wins.
        if verdict.ok:
            # A primary repaired from the replica is good as of now, not as read.
            read = None if verdict.repaired else began
            await self._ctx.db(integrity.mark_verified, blob_id, read_since=read)
        else:
            damage: Damage = verdict.primary.status  # type: ignore[assignment]
            await self._ctx.db(integrity.mark_damaged, blob_id, damage, read_since=began)
        await self.refresh_gauges()

    async def mark(self, blob_id: str, damage: Damage) -> None:
        """Record damage a read found, then verify the blob in the background: that
        repairs it from a replica if it can, and clears the mark if the stored bytes are
        right after all (flipped on the way, not on disk). Never fails the caller: the
        read's own error matters more, and the scrub finds the damage again."""
        try:
            if await self._ctx.db(self._ctx.integrity.mark_damaged, blob_id, damage):
                self._ctx.metrics.integrity_damage_found.labels(damage=damage).inc()
            await self.refresh_gauges()
        except Exception:
            log.exception("integrity: could not record blob %s as %s", blob_id, damage)
        if blob_id not in self._confirming:
            task = asyncio.get_running_loop().create_task(self._confirm(blob_id))
            self._confirming[blob_id] = task
            task.add_done_callback(lambda _: self._confirming.pop(blob_id, None))

    async def _confirm(self, blob_id: str) -> None:
        try:
            # An anyio scope, not Task.cancel(): the blob stores' own shielded clean-ups
            # are anyio scopes too, and a bare cancel would escape them.
            with anyio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    blob = await self._ctx.db(self._ctx.integrity.stored_blob, blob_id)
                    if blob is not None:
                        await self.verify_blob(blob)
                finally:
                    self._scopes.discard(scope)
        except Exception:
            log.exception("integrity: verifying blob %s after a failed read failed", blob_id)

    async def settle(self) -> None:
        """Wait for the background verifications under way (tests, shutdown)."""
        await asyncio.gather(*self._confirming.values(), return_exceptions=True)

    async def close(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()
        with anyio.CancelScope(shield=True):  # shutdown may run in a cancelled scope
            await self.settle()

    async def damage_counts(self) -> dict[str, int]:
        counts = await self._ctx.db(self._ctx.integrity.damage_counts)
        for damage in DAMAGES:
            self._ctx.metrics.integrity_damaged_blobs.labels(damage=damage).set(counts[damage])
        return counts

    async def health(self) -> dict[str, Any]:
        """For the detailed health check: blobs marked damaged, and the last scrub."""
        try:
            counts = await self.damage_counts()
            state = await self._ctx.db(self._ctx.integrity.scrub_state)
        except StorageError as exc:
            return {"ok": False, "error": exc.message}
        damaged = sum(counts.values())
        last = (state.last_report or {}).get("finished_at")
        return {"ok": damaged == 0, "damaged_blobs": damaged, **counts, "last_scrub": last}

    async def refresh_gauges(self) -> None:
        """Set the damaged-blob gauges from the index (every instance's findings)."""
        await self.damage_counts()

    async def repair_marked(self) -> int:
        """Verify again every marked blob (repairing from a replica); returns how many
        are intact now. Run by maintenance, so marks found by reads get repaired."""
        if self._stores[1] is None:
            return 0
        fixed = 0
        for damaged in await self._ctx.db(self._ctx.integrity.damaged_blobs):
            blob = await self._ctx.db(self._ctx.integrity.stored_blob, damaged.blob_id)
            if blob is not None and (await self.verify_blob(blob)).ok:
                fixed += 1
        return fixed
