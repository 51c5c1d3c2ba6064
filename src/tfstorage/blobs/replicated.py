"""A primary blob store with a replica: writes copied, reads failing over.

Writes go to the primary, then are copied to the replica before `put` returns. A replica
that is down does not fail the write: the primary holds the bytes durably and is the
source of truth, so making every upload depend on a second engine would only double the
ways uploads fail. The blob id goes to a catch-up journal instead, which `replicate()`
(run periodically, and by hand with `full=True` to compare whole listings) works off.
The journal is a `ReplicaJournal`: the service gives the store one kept in the index, so
that every instance sharing the index sees it and it outlives any one of them.
After a replica failure, writes skip it for a short cooldown rather than each waiting
out its timeouts.

Reads try the primary and fall back to the replica when the primary does not have the
blob or cannot serve, also in the middle of a stream. The service, which knows the
checksums, can read the replica directly with `open_replica` when the primary's bytes
do not match.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import anyio

from tfstorage.blobs.base import (
    AssembledBlob,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    ByteStream,
    Capacity,
    PartsOnPrimary,
    StoredPart,
    is_blob_id,
)
from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE

log = logging.getLogger(__name__)

REPLICA_COOLDOWN_SECONDS: Final = 30.0
JOURNAL_PAGE: Final = 500
_FAILOVER = (BlobNotFound, BlobStoreUnavailable)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int  # queue order
    operation: str  # "put" or "delete"
    blob_id: str


class ReplicaJournal(Protocol):
    """Where the blob ids the replica still needs are queued, oldest first."""

    async def add(self, operation: str, blob_id: str) -> None: ...

    async def pending(self) -> int: ...

    async def entries(self, after: int, limit: int) -> list[JournalEntry]:
        """Up to `limit` entries with a `seq` above `after`, in queue order."""
        ...

    async def remove(self, seqs: Collection[int]) -> None: ...


class MemoryJournal:
    """A `ReplicaJournal` in this process's memory: for tests, and for a store that is not
    (yet) attached to an index. Lost with the process."""

    def __init__(self) -> None:
        self._entries: dict[int, JournalEntry] = {}
        self._seqs = itertools.count(1)

    async def add(self, operation: str, blob_id: str) -> None:
        assert operation in ("put", "delete") and is_blob_id(blob_id)
        seq = next(self._seqs)
        self._entries[seq] = JournalEntry(seq, operation, blob_id)

    async def pending(self) -> int:
        return len(self._entries)

    async def entries(self, after: int, limit: int) -> list[JournalEntry]:
        return [e for seq, e in sorted(self._entries.items()) if seq > after][:limit]

    async def remove(self, seqs: Collection[int]) -> None:
        for seq in seqs:
            self._entries.pop(seq, None)


@dataclass(frozen=True, slots=True)
class ReplicationReport:
    copied: int = 0
    deleted: int = 0
    failed: int = 0  # still pending in the journal
    replica_only: int = 0  # full runs: blobs the primary lacks (kept: maybe the only copy)
    mismatched: int = 0  # full runs: held by both at different sizes (neither overwritten)
    busy: bool = False  # another instance was catching up: this run did nothing


class ReplicatedBlobStore(PartsOnPrimary):
    """A `BlobStore` over a primary and a replica of any kinds."""

    name = "replicated"

    def __init__(
        self,
        primary: BlobStore,
        replica: BlobStore,
        *,
        journal: ReplicaJournal | None = None,
        cooldown_seconds: float = REPLICA_COOLDOWN_SECONDS,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.journal: ReplicaJournal = journal or MemoryJournal()
        self._cooldown = cooldown_seconds
        self._replica_down_until = 0.0

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        size = await self.primary.put(blob_id, chunks)
        await self._replicate_new(blob_id)
        return size

    async def _replicate_new(self, blob_id: str) -> None:
        if time.monotonic() < self._replica_down_until:
            await self.journal.add("put", blob_id)
            return
        try:
            await self._copy(blob_id)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self.journal.add("put", blob_id)
            if not isinstance(exc, Exception):
                raise  # cancelled: the caller records nothing, the journal entry is harmless
            self._replica_failed("copying a blob", exc)

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        # Parts went to the primary only; the assembled blob is replicated like any other.
        assembled = await super().complete_multipart(
            blob_id, upload, parts, expected_sha256=expected_sha256, block_size=block_size
        )
        await self._replicate_new(blob_id)
        return assembled

    async def _copy(self, blob_id: str) -> None:
        stream = await self.primary.open(blob_id)
        try:
            await self.replica.put(blob_id, stream)
        finally:
            await stream.aclose()

    def _replica_failed(self, action: str, exc: Exception) -> None:
        self._replica_down_until = time.monotonic() + self._cooldown
        log.warning("replica: %s failed (%s); queued for replicate()", action, _describe(exc))

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        try:
            stream = await self.primary.open(blob_id, start, end)
        except _FAILOVER as primary_error:
            return await self._from_replica(blob_id, start, end, primary_error)
        return _FailoverStream(self, blob_id, stream, start, end)

    async def open_replica(
        self, blob_id: str, start: int = 0, end: int | None = None
    ) -> ByteStream:
        """Read from the replica only (the primary's bytes were found corrupt)."""
        return await self.replica.open(blob_id, start, end)

    async def _from_replica(
        self, blob_id: str, start: int, end: int | None, primary_error: Exception
    ) -> ByteStream:
        try:
            return await self.replica.open(blob_id, start, end)
        except BlobNotFound:
            raise primary_error from None  # the primary's answer says more
        except BlobStoreUnavailable as exc:
            if isinstance(primary_error, BlobNotFound):
                raise  # maybe the replica has it: "retry later" is the truthful answer
            raise primary_error from exc

    async def stat(self, blob_id: str) -> BlobInfo:
        try:
            return await self.primary.stat(blob_id)
        except _FAILOVER as primary_error:
            try:
                return await self.replica.stat(blob_id)
            except _FAILOVER:
                raise primary_error from None

    async def delete(self, blob_id: str) -> None:
        await self.primary.delete(blob_id)
        try:
            await self.replica.delete(blob_id)
        except BlobStoreUnavailable as exc:
            await self.journal.add("delete", blob_id)
            self._replica_failed("deleting a blob", exc)

    def list_blobs(self) -> AsyncIterator[BlobInfo]:
        return self.primary.list_blobs()

    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        swept = await self.primary.sweep_incomplete(older_than, keep)
        try:
            swept += await self.replica.sweep_incomplete(older_than)
        except BlobStoreUnavailable as exc:
            log.warning("replica: sweeping failed (%s)", _describe(exc))
        return swept

    async def capacity(self) -> Capacity:
        return await self.primary.capacity()

    async def check(self) -> None:
        """Raise only when neither store can serve: with one, reads go on."""
        health = await self.health()
        if not (health["primary"]["ok"] or health["replica"]["ok"]):
            raise BlobStoreUnavailable("replicated blob store: primary and replica unavailable")

    async def health(self) -> dict[str, Any]:
        """Both stores' state, for the health endpoint."""
        primary, replica = await _probe(self.primary), await _probe(self.replica)
        return {
            "type": self.name,
            "status": "ok" if primary["ok"] and replica["ok"] else "degraded",
            "primary": primary,
            "replica": replica,
            "pending_replication": await self.journal.pending(),
        }

    async def replicate(self, *, full: bool = False) -> ReplicationReport:
        """Bring the replica up to date: the journal's entries, then with `full` every
        primary blob the replica lacks. A blob both hold at different sizes is counted in
        `mismatched` and left alone: either copy may be the damaged one, and only the
        index's checksums can tell (the service's verified reads do)."""
        copied = deleted = failed = replica_only = mismatched = 0
        after = 0
        while page := await self.journal.entries(after, JOURNAL_PAGE):
            after = page[-1].seq
            latest: dict[str, list[JournalEntry]] = {}
            for entry in page:  # the last operation on an id is the one that counts
                latest.setdefault(entry.blob_id, []).append(entry)
            done: list[int] = []
            for blob_id, queued in latest.items():
                operation = queued[-1].operation
                try:
                    if operation == "delete":
                        await self.replica.delete(blob_id)
                        deleted += 1
                    else:
                        await self._copy(blob_id)
                        copied += 1
                except BlobNotFound:
                    pass  # deleted from the primary since: nothing to copy
                except Exception as exc:
                    failed += 1  # stays queued for the next run
                    log.warning("replica: catching up %s failed (%s)", blob_id, _describe(exc))
                    continue
                done += [entry.seq for entry in queued]
            await self.journal.remove(done)
            if not done:
                break  # nothing of a whole page went through: the replica is down
        if full:
            on_replica = {info.blob_id: info.size async for info in self.replica.list_blobs()}
            async for info in self.primary.list_blobs():
                replica_size = on_replica.pop(info.blob_id, None)
                if replica_size is not None:
                    mismatched += replica_size != info.size
                    continue
                try:
                    await self._copy(info.blob_id)
                    copied += 1
                except BlobNotFound:
                    pass
            replica_only = len(on_replica)
        if not failed:
            self._replica_down_until = 0.0
        else:
            failed = max(failed, await self.journal.pending())
        return ReplicationReport(copied, deleted, failed, replica_only, mismatched)

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.replica.close()


class _FailoverStream(AsyncIterator[bytes]):
    """The primary's stream; if it breaks, the rest of the range from the replica."""

    def __init__(
        self,
        store: ReplicatedBlobStore,
        blob_id: str,
        stream: ByteStream,
        start: int,
        end: int | None,
    ) -> None:
        self._store = store
        self._blob_id = blob_id
        self._stream = stream
        self._offset = start
        self._end = end
        self._failed_over = False

    async def __anext__(self) -> bytes:
        try:
            chunk = await anext(self._stream)
        except BlobStoreUnavailable as exc:
            if self._failed_over:
                raise
            await self._stream.aclose()
            self._failed_over = True
            log.warning("primary failed mid-read (%s); going on from the replica", exc.message)
            try:
                self._stream = await self._store.replica.open(
                    self._blob_id, self._offset, self._end
                )
            except _FAILOVER:
                raise exc from None
            chunk = await anext(self._stream)
        self._offset += len(chunk)
        return chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _probe(store: BlobStore) -> dict[str, Any]:
    describe = getattr(store, "describe", None)
    detail: dict[str, Any] = describe() if describe else {"type": store.name}
    try:
        await store.check()
    except Exception as exc:
        return {**detail, "ok": False, "error": _describe(exc)}
    return {**detail, "ok": True}


def _describe(exc: BaseException) -> str:
    return getattr(exc, "message", None) or type(exc).__name__
