"""Blobs as files under a root directory: `root/ab/cd/<blob_id>`, written atomically.

Every file operation runs in a worker thread. A put writes `root/.tmp/<id>-<random>`,
fsyncs it, renames it into place and fsyncs the directories it changed, so a crash leaves
either nothing under the id or the whole blob.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import stat
import threading
import weakref
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Generator,
    Iterator,
    Sequence,
)
from contextlib import contextmanager, suppress
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from tfstorage.blobs.base import (
    MAX_READ_CHUNK,
    MISMATCH,
    AssembledBlob,
    BlobInfo,
    BlobNotFound,
    BlobStoreUnavailable,
    ByteStream,
    Capacity,
    DigestMismatch,
    StoredPart,
    is_blob_id,
)
from tfstorage.blobs.digests import Digests
from tfstorage.blobs.local_parts import (
    ASSEMBLY,
    PARTS_DIR,
    PrefixDigests,
    claim_place,
    concatenate,
    in_place,
    new_part_name,
    part_location,
    placed_handle,
    placed_whole,
    seal,
    sweep_uploads,
    upload_dir,
)
from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE
from tfstorage.errors import InsufficientStorage, InvalidPart

MiB: Final = 1024 * 1024
TMP_DIR: Final = ".tmp"
_FILE_MODE: Final = 0o640
_DIR_MODE: Final = 0o750
_NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_MAX_IOV: Final = 512  # os.writev refuses more buffers than IOV_MAX (1024 on Linux, macOS)
_HEX: Final = frozenset("0123456789abcdef")


class LocalBlobStore:
    """A `BlobStore` on a local (or mounted) POSIX file system."""

    name = "local"

    def __init__(
        self,
        root: Path,
        *,
        write_buffer_size: int = MiB,
        read_chunk_size: int = MAX_READ_CHUNK,
        list_batch_size: int = 1000,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        if min(write_buffer_size, read_chunk_size, list_batch_size) < 1:
            raise ValueError("buffer, chunk and batch sizes must be positive")
        self._root = os.path.abspath(root)
        self._tmp = os.path.join(self._root, TMP_DIR)
        self._parts_root = os.path.join(self._root, PARTS_DIR)
        # Uploads whose placed parts are being hashed ahead of their completion.
        self._prefixes: dict[str, PrefixDigests] = {}
        self._write_buffer_size = write_buffer_size
        self._read_chunk_size = read_chunk_size
        self._list_batch_size = list_batch_size
        # The block size parts are hashed ahead with (BLOCK_SIZE); a completion that asks
        # for another hashes everything itself.
        self._block_size = block_size
        with _os_errors("creating the root directory"):
            os.makedirs(self._tmp, mode=_DIR_MODE, exist_ok=True)
            os.makedirs(self._parts_root, mode=_DIR_MODE, exist_ok=True)

    @property
    def root(self) -> Path:
        return Path(self._root)

    def _paths(self, blob_id: str) -> tuple[str, str, str]:
        # The one place a blob id becomes a path: anything but 32 hex characters is refused
        # so that no string from elsewhere can name a file outside the fan-out tree.
        if not (isinstance(blob_id, str) and is_blob_id(blob_id)):
            raise ValueError("malformed blob id")
        level1 = os.path.join(self._root, blob_id[:2])
        level2 = os.path.join(level1, blob_id[2:4])
        return level1, level2, os.path.join(level2, blob_id)

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        level1, level2, final = self._paths(blob_id)
        temp = _TempFile(self._tmp, f"{blob_id}-{secrets.token_hex(8)}")
        try:
            total, rest = await self._receive(temp, chunks)
            await anyio.to_thread.run_sync(temp.commit, rest, self._root, level1, level2, final)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(temp.discard)
            raise
        return total

    async def _receive(
        self, temp: _TempFile | _PlacedPart, chunks: AsyncIterable[bytes]
    ) -> tuple[int, list[bytes]]:
        """Write `chunks` to `temp` except a last batch (returned, with the total size),
        so that a small write costs the caller's one final thread hop only."""
        loop = asyncio.get_running_loop()
        writing: asyncio.Future[None] | None = None
        try:
            # Chunks are coalesced into ~write_buffer_size batches: one thread hop and one
            # writev per batch, without copying the producer's bytes. One batch is written
            # while the next is received, so the disk and the network overlap.
            batch: list[bytes] = []
            batch_size = total = 0
            async for chunk in chunks:
                if not chunk:
                    continue
                # Only bytes is immutable; a bytearray may be reused by its producer.
                batch.append(chunk if type(chunk) is bytes else bytes(chunk))
                batch_size += len(chunk)
                if batch_size >= self._write_buffer_size or len(batch) >= _MAX_IOV:
                    if writing is not None:
                        await writing
                    writing = loop.run_in_executor(None, temp.write, batch)
                    batch = []
                    total += batch_size
                    batch_size = 0
            if writing is not None:
                await writing
                writing = None
        except BaseException:
            if writing is not None:  # never discard under a write still running
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(writing, return_exceptions=True)
            raise
        return total + batch_size, batch

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> ByteStream:
        path = self._paths(blob_id)[2]
        opened = await anyio.to_thread.run_sync(_open_range, path, blob_id, start, end)
        if isinstance(opened, bytes):
            return _InMemoryReader(opened)
        fd, end = opened
        return _FileReader(fd, start, end, self._read_chunk_size)

    async def stat(self, blob_id: str) -> BlobInfo:
        path = self._paths(blob_id)[2]
        return await anyio.to_thread.run_sync(_stat_blob, path, blob_id)

    async def delete(self, blob_id: str) -> None:
        path = self._paths(blob_id)[2]
        # No directory fsync: the index forgets a blob before its bytes go, so a delete
        # lost in a crash only leaves an orphan for garbage collection.
        await anyio.to_thread.run_sync(_unlink_if_present, path)

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        # One lazy scan advanced a batch at a time in a worker thread: memory stays bounded
        # however many blobs the store holds.
        scan = _scan_blobs(self._root)
        try:
            while batch := await anyio.to_thread.run_sync(
                list, islice(scan, self._list_batch_size)
            ):
                for info in batch:
                    yield info
        finally:
            scan.close()

    async def sweep_incomplete(self, older_than: float, keep: Collection[str] = ()) -> int:
        swept = await anyio.to_thread.run_sync(_sweep_temp_files, self._tmp, older_than)
        with _os_errors("sweeping multipart uploads"):
            swept += await anyio.to_thread.run_sync(
                sweep_uploads, self._parts_root, older_than, frozenset(keep)
            )
        return swept

    async def begin_multipart(self, blob_id: str) -> str:
        self._paths(blob_id)  # refuses a malformed id
        directory = upload_dir(self._parts_root, blob_id, blob_id)

        def make() -> None:
            with _os_errors("starting a multipart upload"):
                if _mkdir(directory):
                    _fsync_dir(self._parts_root)

        await anyio.to_thread.run_sync(make)
        return blob_id

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
        directory = upload_dir(self._parts_root, blob_id, upload)
        placed = offset is not None and await anyio.to_thread.run_sync(
            _claim_place, directory, part_number
        )
        if placed and offset is not None:
            # The first copy of a part whose place is known goes straight there; its
            # region is never written again (see local_parts), so a failure mid-way
            # only leaves bytes nobody references.
            target: _TempFile | _PlacedPart = _PlacedPart(directory, offset, size)
            name = placed_handle(part_number, offset)
        else:
            # Any other part is a file of its own, under a fresh name: the index only
            # ever points at a part once it is whole and durable.
            name = new_part_name(part_number)
            target = _TempFile(directory, name)
        try:
            total, rest = await self._receive(target, chunks)
            await anyio.to_thread.run_sync(target.sync_in_place, rest)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(target.discard)
            raise
        if isinstance(target, _PlacedPart) and offset is not None:
            await anyio.to_thread.run_sync(_placed_whole, directory, part_number)
            self._hash_ahead(upload, directory, offset, total, name)
        return StoredPart(part_number, total, name)

    def _hash_ahead(self, upload: str, directory: str, offset: int, size: int, name: str) -> None:
        prefix = self._prefixes.get(upload)
        if prefix is None:
            if len(self._prefixes) >= _MAX_PREFIXES:  # abandoned sessions: forget the oldest
                del self._prefixes[next(iter(self._prefixes))]
            prefix = self._prefixes[upload] = PrefixDigests(
                os.path.join(directory, ASSEMBLY), self._block_size
            )
        if prefix.add(offset, size, name):
            # In a thread of its own, never one of the pools the writes need; the part's
            # answer does not wait for it. A failure (the upload aborted meanwhile) only
            # leaves the completion to hash everything.
            threading.Thread(target=_quietly, args=(prefix.advance,), daemon=True).start()

    async def discard_part(self, blob_id: str, upload: str, part: StoredPart) -> bool:
        path, _ = part_location(upload_dir(self._parts_root, blob_id, upload), part)
        if os.path.basename(path) != ASSEMBLY:  # a placed part's region just stays unused
            await anyio.to_thread.run_sync(_unlink_if_present, path)
        return True

    async def complete_multipart(
        self,
        blob_id: str,
        upload: str,
        parts: Sequence[StoredPart],
        *,
        expected_sha256: str | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> AssembledBlob:
        level1, level2, final = self._paths(blob_id)
        directory = upload_dir(self._parts_root, blob_id, upload)
        located = [part_location(directory, part) for part in parts]
        ranges = [
            (path, offset, part.size) for (path, offset), part in zip(located, parts, strict=True)
        ]
        total = sum(part.size for part in parts)

        def check(digests: Digests) -> None:
            if digests.size != total:
                raise InvalidPart("a part of the upload changed size since it was stored")
            if expected_sha256 is not None and digests.sha256 != expected_sha256:
                raise DigestMismatch(MISMATCH, parts_consumed=False)

        prefix = self._prefixes.get(upload)

        def assemble_in_place() -> AssembledBlob | None:
            # The parts already form the object: hash it (what was not hashed ahead),
            # and rename it into place.
            assembly = _TempFile(directory, ASSEMBLY)
            with _os_errors("assembling a multipart blob"):
                if not seal(directory):
                    return None  # a part is being placed: its bytes would join the blob
                try:
                    if os.stat(assembly.path).st_size != total:
                        return None  # more was placed than this completion lists
                except FileNotFoundError:
                    raise InvalidPart("a part of the upload is no longer stored") from None
                known = prefix.of([part.handle for part in parts], block_size) if prefix else None
                digests = known or concatenate(ranges, None, Digests(block_size))
            check(digests)
            assembly.fd = os.open(assembly.path, os.O_RDONLY | os.O_CLOEXEC)
            # Its parts may be days old: dated now, the blob gets the orphan sweep's
            # grace until the index commits it, as a freshly written blob does.
            os.utime(assembly.fd)
            assembly.commit([], self._root, level1, level2, final)
            return AssembledBlob(
                digests.size, digests.md5, digests.sha256, True, blocks=digests.blocks
            )

        if in_place(located, parts):
            done = await anyio.to_thread.run_sync(assemble_in_place)
            if done is not None:
                return done
        temp = _TempFile(self._tmp, f"{blob_id}-{secrets.token_hex(8)}")

        def assemble() -> AssembledBlob:
            with _os_errors("assembling a multipart blob"):
                digests = concatenate(ranges, temp.write, Digests(block_size))
            check(digests)
            temp.commit([], self._root, level1, level2, final)
            return AssembledBlob(
                digests.size, digests.md5, digests.sha256, False, blocks=digests.blocks
            )

        try:
            return await anyio.to_thread.run_sync(assemble)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(temp.discard)
            raise

    async def abort_multipart(self, blob_id: str, upload: str) -> None:
        directory = upload_dir(self._parts_root, blob_id, upload)
        self._prefixes.pop(upload, None)
        # A directory half removed by a crash is finished by the sweep (not in `keep`).
        await anyio.to_thread.run_sync(partial(shutil.rmtree, directory, ignore_errors=True))

    async def capacity(self) -> Capacity:
        with _os_errors("reading disk usage"):
            usage = await anyio.to_thread.run_sync(shutil.disk_usage, self._root)
        return Capacity(total_bytes=usage.total, free_bytes=usage.free)

    async def check(self) -> None:
        try:
            await anyio.to_thread.run_sync(_probe_writable, self._tmp)
        except OSError as exc:
            raise BlobStoreUnavailable("local blob store: the root is not writable") from exc

    async def close(self) -> None:
        # Nothing is pooled: each operation owns its descriptors, and readers still open
        # keep theirs until they finish.
        return None


class _TempFile:
    """A blob being written under `.tmp/`; created on the first write (so a small put is a
    single thread hop) and removed unless `commit` succeeds."""

    __slots__ = ("fd", "flushed", "path", "tmp_dir", "written")

    def __init__(self, tmp_dir: str, name: str) -> None:
        self.tmp_dir = tmp_dir
        self.path = os.path.join(tmp_dir, name)
        self.fd: int | None = None
        self.written = 0
        self.flushed = 0

    def write(self, buffers: list[bytes]) -> None:
        with _os_errors("writing"):
            if self.fd is None:
                self.fd = _create_exclusive(self.tmp_dir, self.path)
            if buffers:
                self.written += _writev_all(self.fd, buffers)
                if self.written - self.flushed >= _WRITEBACK_EVERY:
                    # Start writing back what is in the page cache now, without waiting,
                    # so the final fsync has little left to flush: for a large blob, the
                    # disk then works while the body is still arriving.
                    _start_writeback(self.fd, self.flushed, self.written - self.flushed)
                    self.flushed = self.written
        # Emptied here because the worker thread keeps a reference to its last arguments,
        # which would otherwise hold a second batch alive.
        buffers.clear()

    def commit(self, buffers: list[bytes], root: str, level1: str, level2: str, final: str) -> None:
        self.write(buffers)
        fd, self.fd = self.fd, None
        assert fd is not None
        with _os_errors("writing"):
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            # The rename, and each fan-out directory made for it, is durable only once the
            # directory holding the new entry is fsynced.
            dirty = [level2]
            if _mkdir(level1):
                dirty.append(root)
            if _mkdir(level2):
                dirty.append(level1)
            os.replace(self.path, final)
            try:
                for directory in dirty:
                    _fsync_dir(directory)
            except OSError:
                _unlink_if_present(final)
                raise

    def sync_in_place(self, buffers: list[bytes]) -> None:
        """Finish the file where it was written (a multipart part), durably."""
        self.write(buffers)
        fd, self.fd = self.fd, None
        assert fd is not None
        with _os_errors("writing"):
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(self.tmp_dir)

    def discard(self) -> None:
        # Best effort: sweep_incomplete removes a leftover temp file later, whereas raising
        # here would replace the error that brought us here.
        fd, self.fd = self.fd, None
        with suppress(OSError, BlobStoreUnavailable):
            if fd is not None:
                os.close(fd)
            _unlink_if_present(self.path)


_MAX_PREFIXES: Final = 1000


def _quietly(work: Callable[[], None]) -> None:
    with suppress(Exception):
        work()


def _claim_place(directory: str, part_number: int) -> bool:
    with _os_errors("starting a part"):
        return claim_place(directory, part_number)


def _placed_whole(directory: str, part_number: int) -> None:
    with _os_errors("writing"):
        placed_whole(directory, part_number)


class _PlacedPart:
    """A part written into its region of the upload's assembly file (never past it)."""

    __slots__ = ("end", "fd", "flushed", "offset", "path", "tmp_dir")

    def __init__(self, directory: str, offset: int, size: int) -> None:
        self.tmp_dir = directory
        self.path = os.path.join(directory, ASSEMBLY)
        self.offset = self.flushed = offset
        self.end = offset + size
        self.fd: int | None = None

    def write(self, buffers: list[bytes]) -> None:
        with _os_errors("writing"):
            if self.fd is None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
                self.fd = os.open(self.path, flags, _FILE_MODE)
            for buffer in buffers:
                if self.offset + len(buffer) > self.end:
                    raise BlobStoreUnavailable("local blob store: a part outgrew its place")
                view = memoryview(buffer)
                while view:
                    written = os.pwrite(self.fd, view, self.offset)
                    self.offset += written
                    view = view[written:]
            if self.offset - self.flushed >= _WRITEBACK_EVERY:
                # As for a put: the disk starts on this region while the rest arrives,
                # and only this region (the final fdatasync flushes the whole file).
                _start_writeback(self.fd, self.flushed, self.offset - self.flushed)
                self.flushed = self.offset
        buffers.clear()

    def sync_in_place(self, buffers: list[bytes]) -> None:
        self.write(buffers)
        fd, self.fd = self.fd, None
        assert fd is not None
        with _os_errors("writing"):
            try:
                os.fdatasync(fd)  # the part's bytes, and the file's size if it grew
            finally:
                os.close(fd)
            _fsync_dir(self.tmp_dir)

    def discard(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)


class _FileReader(AsyncIterator[bytes]):
    """Reads `[start, end)` of an open descriptor with `pread` (no shared file offset).

    `_READ_AHEAD` chunks ahead: once a chunk is handed out, the next ones are read in
    worker threads while the caller sends this one, so the disk and the socket work at
    the same time (a cold 1 GiB GET read and sent in turns ran at a quarter of the
    disk's pace).

    A chunk is read as pieces that end at multiples of `_PIECE` (the default block size,
    1 MiB) in the blob, handed out one by one: a reader checking blocks of that size
    never slices a chunk (a 1 MiB slice is a fresh mmap, its page faults and a copy;
    slicing 4 MiB reads took half the event loop's time on a large GET).

    The descriptor outlives an unlink (POSIX), so a reader opened before a delete gets
    every byte. It is closed when the range is exhausted, on `aclose()`, after a read
    error, or when the reader is garbage collected; never under a read in flight.
    """

    def __init__(self, fd: int, start: int, end: int, chunk_size: int) -> None:
        self._fd = fd
        self._offset = start  # of the next chunk handed out
        self._queued = start  # where the next read ahead starts
        self._end = end
        self._chunk_size = chunk_size
        self._reading = False
        self._closed = False
        self._ahead: deque[asyncio.Task[list[bytes]]] = deque()
        self._pieces: deque[bytes] = deque()  # the rest of the chunk being handed out
        self._finalizer = weakref.finalize(self, os.close, fd)

    async def __anext__(self) -> bytes:
        if self._reading:
            raise RuntimeError("a blob stream cannot be read by two tasks at once")
        if self._closed or self._offset >= self._end:
            self._release()
            raise StopAsyncIteration
        if self._pieces:
            data = self._pieces.popleft()
            self._offset += len(data)
            return data
        self._reading = True
        try:
            # Cancelled, this waits for the thread's pread all the same (anyio does not
            # abandon it), so the descriptor is never closed under it.
            if self._ahead:
                pieces = await self._ahead.popleft()
            else:
                pieces = await self._read(self._offset)
                self._queued = self._offset + sum(map(len, pieces))
        except Exception:
            self._release()
            raise
        finally:
            self._reading = False
        if self._closed:  # aclose() was called while the thread was reading
            self._release()
            raise StopAsyncIteration
        data = pieces[0]
        self._pieces.extend(pieces[1:])
        self._offset += len(data)
        while len(self._ahead) < _READ_AHEAD and self._queued < self._end:
            self._ahead.append(asyncio.ensure_future(self._read(self._queued)))
            self._queued += self._span(self._queued)
        return data

    async def _read(self, offset: int) -> list[bytes]:
        # A method, not a function of the descriptor: a pending read keeps the reader,
        # hence its finalizer, alive until the pread is done.
        return await anyio.to_thread.run_sync(_pread_pieces, self._fd, self._span(offset), offset)

    def _span(self, offset: int) -> int:
        """How much the read at `offset` takes: a chunk, ending where a piece does once
        chunks hold whole pieces (a range that starts mid-piece: the reads after the
        first are aligned)."""
        end = min(offset + self._chunk_size, self._end)
        if end < self._end and self._chunk_size >= _PIECE and end // _PIECE * _PIECE > offset:
            end = end // _PIECE * _PIECE
        return end - offset

    async def aclose(self) -> None:
        if self._reading:
            self._closed = True  # __anext__ releases the descriptor when its read returns
        else:
            self._release()

    def _release(self) -> None:
        """Close the descriptor once no read uses it: now, or when the last read ahead
        that nobody will wait for is done."""
        self._closed = True
        self._pieces.clear()
        ahead, self._ahead = list(self._ahead), deque()
        for task in ahead:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a failed read nobody waits for is not news
        left = sum(1 for task in ahead if not task.done())
        if left == 0:
            self._finalizer()
            return

        def settled(task: asyncio.Task[list[bytes]]) -> None:
            nonlocal left
            if not task.cancelled():
                task.exception()
            left -= 1
            if left == 0:
                self._finalizer()

        for task in ahead:
            if not task.done():
                task.add_done_callback(settled)


@contextmanager
def _os_errors(action: str) -> Iterator[None]:
    """Turn an OSError into one of ours, with a message that names no path."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, BlobNotFound):
            raise
        reason = os.strerror(exc.errno) if exc.errno else "unknown error"
        message = f"local blob store: {action} failed: {reason}"
        if exc.errno in _NO_SPACE:
            raise InsufficientStorage(message) from exc
        raise BlobStoreUnavailable(message) from exc


def _create_exclusive(tmp_dir: str, path: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, _FILE_MODE)
    except FileNotFoundError:
        # .tmp was removed (by a cleanup script?): recreate it, but never the root, whose
        # absence may mean an unmounted volume.
        _mkdir(tmp_dir)
        return os.open(path, flags, _FILE_MODE)


def _writev_all(fd: int, buffers: list[bytes]) -> int:
    total = sum(map(len, buffers))
    written = os.writev(fd, buffers)
    if written == total:
        return total
    # Short writes to regular files are rare (a signal, a disk filling up): finish with
    # plain writes, which then complete or raise the real error (ENOSPC).
    rest = memoryview(b"".join(buffers))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]
    return total


_WRITEBACK_EVERY: Final = 8 * MiB
# Chunks a blob stream reads ahead of the one it hands out (_FileReader). The first
# cold GET of a just-written 1 GiB file ran at ~475 MB/s with one ahead, ~620 with two
# (this VM's disk serves a lone reader slowly), no better with four; each costs a chunk
# of memory per stream.
_READ_AHEAD: Final = 2
_ADVISE: Final = getattr(os, "posix_fadvise", None)  # not on macOS
_PIECE: Final = DEFAULT_BLOCK_SIZE  # a verified read then never slices a chunk
_SYNC_FILE_RANGE_WRITE: Final = 2  # <linux/fs.h>: start writeback, do not wait


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    # Linux's sync_file_range(2), which Python's os module lacks; elsewhere the final
    # fsync simply does all the flushing.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


def _start_writeback(fd: int, offset: int, length: int) -> None:
    # Only a hint: durability still comes from the fsync in commit().
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _mkdir(path: str) -> bool:
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        return False
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_if_present(path: str) -> None:
    with _os_errors("deleting"), suppress(FileNotFoundError):
        os.unlink(path)


def _open_for_reading(path: str, blob_id: str) -> tuple[int, int]:
    with _os_errors("opening"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
        try:
            return fd, os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise


_READ_AT_OPEN: Final = 64 * 1024


def _open_range(path: str, blob_id: str, start: int, end: int | None) -> tuple[int, int] | bytes:
    """An open descriptor and the range's end; or, for a small range, its bytes, read in
    the same thread hop (a small object then costs one hop, not two)."""
    fd, size = _open_for_reading(path, blob_id)
    try:
        if end is None:
            end = size
        if not 0 <= start <= end <= size:
            raise ValueError(f"invalid range [{start}, {end}) for a blob of {size} bytes")
        if end - start > _READ_AT_OPEN:
            return fd, end
        data = _pread_exact(fd, end - start, start)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return data


class _InMemoryReader(AsyncIterator[bytes]):
    """A small range already read: one chunk (none if empty)."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data or None

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        self._data = None


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    with _os_errors("reading"):
        data = os.pread(fd, size, offset)
        while len(data) < size:  # short reads are legal, if rare
            more = os.pread(fd, size - len(data), offset + len(data))
            if not more:
                raise BlobStoreUnavailable("local blob store: a blob is shorter than expected")
            data += more
        return data


def _pread_pieces(fd: int, size: int, offset: int) -> list[bytes]:
    """`size` bytes at `offset`, cut where the blob's offset is a multiple of `_PIECE`."""
    pieces = []
    end = offset + size
    if _ADVISE is not None:
        # Asks for the whole chunk at once: the preads below then find their pages
        # coming. Two chunks read at once on one descriptor otherwise look random to the
        # kernel's readahead; a first GET of a just-written 1 GiB blob ran at ~390 MB/s
        # without this, ~650 with it.
        with suppress(OSError):
            _ADVISE(fd, offset, size, os.POSIX_FADV_WILLNEED)
    while offset < end:
        cut = min(end, (offset // _PIECE + 1) * _PIECE)
        pieces.append(_pread_exact(fd, cut - offset, offset))
        offset = cut
    return pieces


def _stat_blob(path: str, blob_id: str) -> BlobInfo:
    with _os_errors("reading metadata"):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise BlobNotFound(blob_id) from None
    return BlobInfo(blob_id=blob_id, size=st.st_size, modified=st.st_mtime)


def _entries(path: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            yield from entries
    except FileNotFoundError:
        return  # removed while we were listing


def _fanout_dirs(path: str) -> Iterator[os.DirEntry[str]]:
    for entry in _entries(path):
        name = entry.name
        is_fanout = len(name) == 2 and name[0] in _HEX and name[1] in _HEX
        if is_fanout and entry.is_dir(follow_symlinks=False):
            yield entry


def _scan_blobs(root: str) -> Generator[BlobInfo, None, None]:
    with _os_errors("listing"):
        for level1 in _fanout_dirs(root):
            for level2 in _fanout_dirs(level1.path):
                prefix = level1.name + level2.name
                for entry in _entries(level2.path):
                    if not (is_blob_id(entry.name) and entry.name.startswith(prefix)):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted since scandir saw it
                    if stat.S_ISREG(st.st_mode):
                        yield BlobInfo(blob_id=entry.name, size=st.st_size, modified=st.st_mtime)


def _sweep_temp_files(tmp_dir: str, older_than: float) -> int:
    removed = 0
    with _os_errors("sweeping temporary files"):
        for entry in _entries(tmp_dir):
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < older_than:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # its writer finished or gave up meanwhile
    return removed


def _probe_writable(tmp_dir: str) -> None:
    probe = os.path.join(tmp_dir, f"probe-{secrets.token_hex(8)}")
    os.close(_create_exclusive(tmp_dir, probe))
    os.unlink(probe)
