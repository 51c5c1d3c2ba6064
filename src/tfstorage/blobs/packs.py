"""Small blobs appended to pack files, one fdatasync making a whole group durable
(Haystack, SeaweedFS volumes); bigger ones are files of a `LocalBlobStore` on the same
root.

A file blob costs a create, an fsync, a rename and directory fsyncs; a packed one costs
a `pwrite` into the store's active pack and a share of one `fdatasync` with every put
running at the same time. Under `root/.packs/`:

- `*.pack`: records (pack_format.py) appended by one store each (pack_files.py);
- `index.sqlite`: where each packed blob is (pack_index.py), shared by every process,
  rebuilt from the packs where it lags behind them;
- `compact.lock`: held by the one compactor at work (pack_maintenance.py).

Compaction runs from `sweep_incomplete`, which garbage collection calls after removing
unreferenced and orphan blobs, so every store wrapping this one (replicated, tiered)
compacts it without knowing.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from tfstorage.blobs.base import (
    MAX_READ_CHUNK,
    AssembledBlob,
    BlobInfo,
    BlobNotFound,
    BlobStoreUnavailable,
    ByteStream,
    Capacity,
    StoredPart,
    is_blob_id,
)
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.blobs.pack_files import (
    ActivePack,
    NotCached,
    create_pack,
    pread_cached,
    pread_exact,
)
from tfstorage.blobs.pack_format import HEADER_SIZE, Record, encode_record
from tfstorage.blobs.pack_index import Location, PackIndex
from tfstorage.blobs.pack_maintenance import (
    CompactionReport,
    compact,
    recover,
    sweep_temp_packs,
)
from tfstorage.blobs.pack_removals import GroupedRemovals
from tfstorage.config import MAX_PACK_THRESHOLD
from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE
from tfstorage.errors import InsufficientStorage

KiB: Final = 1024
MiB: Final = 1024 * KiB
PACKS_DIR: Final = ".packs"
INDEX_FILE: Final = "index.sqlite"
DEFAULT_PACK_THRESHOLD: Final = 64 * KiB
DEFAULT_PACK_SIZE: Final = 64 * MiB
DEFAULT_DEAD_SHARE: Final = 0.5
_LIST_BATCH: Final = 1000
_READ_ATTEMPTS: Final = 10
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
PRead = Callable[[int, int, int], bytes]  # (fd, size, offset) -> exactly size bytes


class PackedBlobStore:
    """A `BlobStore` on a local file system that packs blobs of at most `threshold`
    bytes; everything else (bigger blobs, multipart uploads) is `local`'s."""

    name = "local"

    def __init__(
        self,
        root: Path,
        *,
        threshold: int = DEFAULT_PACK_THRESHOLD,
        pack_size: int = DEFAULT_PACK_SIZE,
        dead_share: float = DEFAULT_DEAD_SHARE,
        read_chunk_size: int = MAX_READ_CHUNK,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        if not 0 < threshold <= MAX_PACK_THRESHOLD:
            raise ValueError(f"the pack threshold must be between 1 and {MAX_PACK_THRESHOLD}")
        if pack_size < 1 or read_chunk_size < 1 or not 0 <= dead_share < 1:
            raise ValueError("invalid pack size, read chunk size or dead share")
        self._local = LocalBlobStore(root, read_chunk_size=read_chunk_size, block_size=block_size)
        self._local_dir = os.fspath(self._local.root)
        self._threshold = threshold
        self._pack_size = pack_size
        self._dead_share = dead_share
        self._read_chunk_size = read_chunk_size
        self._dir = os.path.join(os.path.abspath(root), PACKS_DIR)
        self._append_lock = threading.Lock()
        self._active: ActivePack | None = None
        self._removals = GroupedRemovals(self._remove_all)
        with _errors("opening the pack index"):
            os.makedirs(self._dir, mode=0o750, exist_ok=True)
            self._index = PackIndex(os.path.join(self._dir, INDEX_FILE))
            # What an index update lost (a crash between a sync and its commit).
            recover(self._dir, self._index)

    @property
    def root(self) -> Path:
        return self._local.root

    @property
    def local(self) -> LocalBlobStore:
        return self._local

    # Writing ------------------------------------------------------------------------
    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        _check_id(blob_id)
        iterator = aiter(chunks)
        buffered: list[bytes] = []
        size = 0
        async for chunk in iterator:
            if chunk:
                buffered.append(bytes(chunk))
                size += len(chunk)
                if size > self._threshold:
                    return await self._put_file(blob_id, buffered, iterator)
        data = b"".join(buffered)
        # The record goes in here, on the loop (a write into the page cache), and the
        # caller awaits its group's fsync, which one thread runs for every waiter: a
        # hop to a thread per put cost more CPU than the put's own work.
        pack, record, full = self._append_record(blob_id, data)
        try:
            with _errors("writing"):
                await pack.durable(record.end)
        except BaseException:
            with anyio.CancelScope(shield=True), suppress(Exception):
                if full:
                    await anyio.to_thread.run_sync(pack.close)
                # Cancelled: the record may still be indexed; take it back out. (After
                # a failed sync it never was.)
                await pack.durable(record.end)
                await anyio.to_thread.run_sync(
                    self._index.remove, blob_id, (pack.name, record.offset)
                )
            raise
        if full:
            # Sealed: the records before this one are durable too.
            await anyio.to_thread.run_sync(pack.close)
        with _errors("writing"):
            # A file blob of the same id (an earlier, bigger copy) is replaced.
            self._local_path_unlink(blob_id)
        return size

    async def _put_file(self, blob_id: str, head: list[bytes], rest: AsyncIterator[bytes]) -> int:
        async def whole() -> AsyncIterator[bytes]:
            while head:
                yield head.pop(0)
            async for chunk in rest:
                yield chunk

        size = await self._local.put(blob_id, whole())
        await self._forget(blob_id)  # a packed blob of the same id is replaced
        return size

    async def _forget(self, blob_id: str) -> None:
        def forget() -> None:
            with _errors("updating the pack index"):
                self._index.remove(blob_id)

        await anyio.to_thread.run_sync(forget)

    def _append_record(self, blob_id: str, data: bytes) -> tuple[ActivePack, Record, bool]:
        """Append `data`'s record to the active pack; (the pack, the record, whether it
        filled the pack, which then takes no more)."""
        modified = time.time()
        encoded = encode_record(blob_id, data, modified)
        with _errors("writing"), self._append_lock:
            pack = self._active
            if pack is not None and pack.error is not None:
                pack.close()
                pack = self._active = None
            if pack is None:
                pack = self._active = ActivePack(*create_pack(self._dir), self._publish)
            record = Record(pack.size, blob_id, len(data), modified, 0)
            try:
                pack.append(record, encoded)
            except BaseException:
                # Perhaps half a record at its end: nothing more goes into this pack.
                self._active = None
                pack.close()
                raise
            full = pack.size >= self._pack_size
            if full:
                self._active = None  # the next put starts a new pack
        return pack, record, full

    def _publish(self, pack: str, records: list[Record], through: int) -> None:
        self._index.record(pack, records, through, found=False)

    def _local_path_unlink(self, blob_id: str) -> None:
        # Built from a string kept once: a Path per put cost more than the unlink.
        path = f"{self._local_dir}/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"
        with suppress(FileNotFoundError):
            os.unlink(path)

    async def delete(self, blob_id: str) -> None:
        _check_id(blob_id)
        await self._removals.remove(blob_id)  # with the deletes asked for meanwhile

    def _remove_all(self, blob_ids: list[str]) -> dict[str, BaseException]:
        """Remove the group from the index, then any file copy of each: a file that
        cannot be removed fails its own delete only."""
        with _errors("deleting"):
            self._index.remove_all(blob_ids)
        failed: dict[str, BaseException] = {}
        for blob_id in blob_ids:
            try:
                with _errors("deleting"):
                    self._local_path_unlink(blob_id)
            except Exception as exc:
                failed[blob_id] = exc
        return failed

    # Reading ------------------------------------------------------------------------
    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        _check_id(blob_id)
        try:
            # Here on the loop when the bytes are in the page cache: a packed blob is
            # small, and a copy from the cache costs less than a hop to a thread.
            data = self._read(blob_id, start, end, pread_cached)
        except NotCached:
            data = await anyio.to_thread.run_sync(self._read, blob_id, start, end)
        if data is None:
            return await self._local.open(blob_id, start, end)
        return _BytesReader(data, self._read_chunk_size)

    def _read(
        self, blob_id: str, start: int, end: int | None, pread: PRead = pread_exact
    ) -> bytes | None:
        with _errors("reading"):
            for _ in range(_READ_ATTEMPTS):
                location = self._index.locate(blob_id)
                if location is None:
                    return None
                stop = location.length if end is None else end
                if not 0 <= start <= stop <= location.length:
                    raise ValueError(
                        f"invalid range [{start}, {end}) for a blob of {location.length} bytes"
                    )
                try:
                    fd = os.open(self._pack_path(location), os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # compacted away since the lookup: look again
                try:
                    return pread(fd, stop - start, location.offset + HEADER_SIZE + start)
                finally:
                    os.close(fd)
        raise BlobStoreUnavailable("pack store: a blob kept moving while it was read")

    def _pack_path(self, location: Location) -> str:
        return os.path.join(self._dir, location.pack)

    async def stat(self, blob_id: str) -> BlobInfo:
        _check_id(blob_id)
        # Here on the loop, as `open` locates a blob: one point read of the index (WAL,
        # so it never waits for a writer) costs less than a hop to a thread.
        with _errors("reading metadata"):
            location = self._index.locate(blob_id)
        if location is None:
            return await self._local.stat(blob_id)
        return BlobInfo(blob_id, location.length, location.modified)

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        after = ""
        while True:

            def page(after: str = after) -> list[tuple[str, int, float]]:
                with _errors("listing"):
                    return self._index.page(after, _LIST_BATCH)

            batch = await anyio.to_thread.run_sync(page)
            for blob_id, length, modified in batch:
                yield BlobInfo(blob_id, length, modified)
            if len(batch) < _LIST_BATCH:
                break
            after = batch[-1][0]
        async for info in self._local.list_blobs():
            yield info

    # Maintenance --------------------------------------------------------------------
    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        swept = await self._local.sweep_incomplete(older_than, keep)

        def sweep() -> int:
            with _errors("sweeping packs"):
                return sweep_temp_packs(self._dir, older_than)

        swept += await anyio.to_thread.run_sync(sweep)
        report = await self.compact()
        return swept + report.packs_removed + report.packs_rewritten

    async def compact(self, dead_share: float | None = None) -> CompactionReport:
        """Reclaim the space of deleted and replaced packed blobs: see pack_maintenance.
        `dead_share`: rewrite packs with more dead bytes than this share (default: the
        store's); 0 reclaims every dead byte of every sealed pack."""
        share = self._dead_share if dead_share is None else dead_share

        def run() -> CompactionReport:
            with _errors("compacting packs"):
                self._seal_if_dead(share)
                return compact(self._dir, self._index, share)

        return await anyio.to_thread.run_sync(run)

    def _seal_if_dead(self, share: float) -> None:
        # Only sealed packs are compacted: the active one is sealed early (the next put
        # starts another) when it is worth compacting, or it would wait for its rollover.
        with self._append_lock:
            pack = self._active
            if pack is None or not pack.size:
                return
            dead = pack.size - self._index.live_bytes(pack.name)
            if dead / pack.size <= share:
                return
            self._active = None
        pack.close()

    async def capacity(self) -> Capacity:
        return await self._local.capacity()

    async def check(self) -> None:
        await self._local.check()

        def probe() -> None:
            with _errors("reading the pack index"):
                self._index.locate("0" * 32)

        await anyio.to_thread.run_sync(probe)

    async def close(self) -> None:
        def close() -> None:
            with self._append_lock:
                pack, self._active = self._active, None
            if pack is not None:
                pack.close()
            self._index.close()

        await anyio.to_thread.run_sync(close)
        await self._local.close()

    # Multipart blobs are files --------------------------------------------------------
    async def begin_multipart(self, blob_id: str) -> str:
        return await self._local.begin_multipart(blob_id)

    async def put_part(
        self,
        blob_id: str,
        upload: str,
        part_number: int,
        chunks: AsyncIterable[bytes],
        *,
        size: int,
        md5: str | None = None,
        sha256: str | None = None,
        offset: int | None = None,
    ) -> StoredPart:
        return await self._local.put_part(
            blob_id, upload, part_number, chunks, size=size, md5=md5, sha256=sha256, offset=offset
        )

    async def discard_part(self, blob_id: str, upload: str, part: StoredPart) -> bool:
        return await self._local.discard_part(blob_id, upload, part)

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        assembled = await self._local.complete_multipart(
            blob_id, upload, parts, expected_sha256=expected_sha256, block_size=block_size
        )
        await self._forget(blob_id)
        return assembled

    async def abort_multipart(self, blob_id: str, upload: str) -> None:
        await self._local.abort_multipart(blob_id, upload)


class _BytesReader(AsyncIterator[bytes]):
    """A packed blob's range, already read: handed out in chunks."""

    def __init__(self, data: bytes, chunk_size: int) -> None:
        self._view = memoryview(data)
        self._chunk_size = chunk_size

    async def __anext__(self) -> bytes:
        if not self._view:
            raise StopAsyncIteration
        chunk, self._view = self._view[: self._chunk_size], self._view[self._chunk_size :]
        return bytes(chunk)

    async def aclose(self) -> None:
        self._view = memoryview(b"")


def _check_id(blob_id: str) -> None:
    if not (isinstance(blob_id, str) and is_blob_id(blob_id)):
        raise ValueError("malformed blob id")


@contextmanager
def _errors(action: str) -> Iterator[None]:
    """OS and SQLite errors become ours, with a message that names no path."""
    try:
        yield
    except (BlobNotFound, BlobStoreUnavailable, InsufficientStorage, ValueError, NotCached):
        raise
    except sqlite3.Error as exc:
        raise BlobStoreUnavailable(f"pack store: {action} failed: the pack index") from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else "unknown error"
        message = f"pack store: {action} failed: {reason}"
        if exc.errno in _NO_SPACE:
            raise InsufficientStorage(message) from exc
        raise BlobStoreUnavailable(message) from exc
