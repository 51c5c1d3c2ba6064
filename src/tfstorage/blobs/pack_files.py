"""Pack files on disk: creating one (exclusively, locked while it is being appended to),
the group commit of the appends, and the small file-system helpers of the pack store.

A pack is appended to by one store only, its creator, which holds an exclusive `flock`
on it for as long as it may append: any other store (another process, or another
instance in this one) that can take the lock knows the pack is sealed for good, since
pack names are never reused.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from typing import Final

from tfstorage.blobs.pack_format import Record

PACK_SUFFIX: Final = ".pack"
TEMP_PREFIX: Final = "tmp-"
FILE_MODE: Final = 0o640
CRASH_POINT_VARIABLE: Final = "TFSTORAGE_TEST_CRASH_POINT"
# Indexes a synced group: (pack name, its records, the offset they are valid through).
Publish = Callable[[str, list[Record], int], None]
Failure = BaseException | None


def crash_point(name: str) -> None:
    """Tests only: die here, as a power cut or an OOM kill would, when asked to."""
    if os.environ.get(CRASH_POINT_VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def create_pack(directory: str) -> tuple[str, int]:
    """A new, empty, locked pack: (name, descriptor). It gets its final name only once
    locked, so no other store ever sees it unlocked (and takes it for a sealed one)."""
    name = f"{time.time_ns():016x}-{os.getpid()}-{secrets.token_hex(4)}{PACK_SUFFIX}"
    temp = os.path.join(directory, TEMP_PREFIX + name)
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temp, os.path.join(directory, name))
        fsync_dir(directory)  # the pack must outlive a crash before any record in it does
    except BaseException:
        os.close(fd)
        with suppress(OSError):
            os.unlink(temp)
        raise
    return name, fd


def lock_sealed(path: str) -> int | None:
    """The pack at `path` open for reading and locked, or None if its writer still holds
    it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def pack_names(directory: str) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(PACK_SUFFIX))


def temp_entries(directory: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                yield entry


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pread_exact(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            raise EOFError("a pack record is shorter than its index entry")
        data += more
    return data


class NotCached(Exception):
    """Reading these bytes would wait for the disk (they are not in the page cache)."""


# How long a pack's sync waits at most for the loop iteration that asked for it to end.
_ITERATION_WAIT: Final = 0.05
# Linux's preadv2 flag: return what the page cache holds instead of waiting for the disk.
_NOWAIT: Final = getattr(os, "RWF_NOWAIT", None)


def pread_cached(fd: int, size: int, offset: int) -> bytes:
    """`pread_exact` of bytes that are in the page cache, or NotCached at once: a read
    that may run on an event loop (the pages of recent and hot blobs are cached)."""
    if _NOWAIT is None:
        raise NotCached
    buf = bytearray(size)
    view = memoryview(buf)
    done = 0
    while done < size:
        try:
            got = os.preadv(fd, [view[done:]], offset + done, _NOWAIT)
        except BlockingIOError:
            raise NotCached from None
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:  # a file system without RWF_NOWAIT
                raise NotCached from None
            raise
        if not got:
            raise EOFError("a pack record is shorter than its index entry")
        done += got
    return bytes(buf)


def _settle(answers: list[tuple[asyncio.Future[None], Failure]]) -> None:
    for waiter, error in answers:
        if waiter.done():  # its caller was cancelled
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


def settle_from_a_thread(answers: Iterable[tuple[asyncio.Future[None], Failure]]) -> None:
    """Settle futures of any event loops from a worker thread, with one wake-up per
    loop for all of its futures: each call_soon_threadsafe wakes its loop, which would
    then run one caller's next step alone (an index commit as a batch of one, say)
    before the others are even told."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[None], Failure]]] = {}
    for waiter, error in answers:
        by_loop.setdefault(waiter.get_loop(), []).append((waiter, error))
    for loop, answer in by_loop.items():
        with suppress(RuntimeError):  # that loop is closed: no one is waiting
            loop.call_soon_threadsafe(_settle, answer)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


class ActivePack:
    """The pack a store appends to, with its group commit: a writer whose record is not
    yet durable either waits for the sync running now or leads the next one, which
    covers everything appended so far. The leader also indexes the group (`publish`), so
    a record is durable and findable when its writer is told so."""

    def __init__(self, name: str, fd: int, publish: Publish) -> None:
        self.name = name
        self.size = 0  # appended through (guarded by the store's append lock)
        self._fd: int | None = fd
        self._publish = publish
        self._state = threading.Condition()
        self._pending: list[Record] = []
        self._appended = 0
        self._durable = 0
        self._syncing = False
        self.error: BaseException | None = None
        # Callers on event loops awaiting durability, and whether a thread serves them.
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._serving = False

    def append(self, record: Record, data: bytes) -> None:
        """Write `data` (the encoded record) at the end. The caller holds the append
        lock, so records never interleave."""
        fd = self._fd
        if fd is None or self.error is not None:
            raise OSError("pack closed")
        # If this raises, part of the record may be there: the caller closes the pack,
        # which syncs the records before it (their writers still succeed), and nothing
        # is appended after it.
        pwrite_all(fd, data, record.offset)
        self.size = record.end
        with self._state:
            self._pending.append(record)
            self._appended = record.end

    def wait_durable(self, end: int) -> None:
        """Return once every byte before `end` is synced and indexed, or raise."""
        with self._state:
            while self._durable < end:
                if self.error is not None:
                    raise self.error
                if self._syncing:
                    self._state.wait()
                    continue
                self._syncing = True
                target, group = self._appended, self._pending
                self._pending = []
                fd = self._fd
                self._state.release()
                failure: BaseException | None = None
                try:
                    if fd is None:
                        raise OSError("pack closed")
                    os.fdatasync(fd)
                    self._publish(self.name, group, target)
                except BaseException as exc:
                    failure = exc
                finally:
                    self._state.acquire()
                    self._syncing = False
                    if failure is None:
                        self._durable = target
                    else:
                        self.error = self.error or failure
                    self._state.notify_all()

    async def durable(self, end: int) -> None:
        """`wait_durable` for a caller on an event loop. One worker thread at a time
        serves every such caller (of any loop), one sync for all those waiting: no
        hop to a thread per caller. The thread syncs once this iteration of the loop
        has ended, so the puts the same iteration runs append first and share the sync
        (8 clients' 4 KiB PUTs come in bursts: the answers sent together bring the next
        requests together)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._state:
            if self._durable >= end:
                return
            self._waiters.append((end, waiter))
            serve = not self._serving
            self._serving = True
        if serve:
            iteration_ended = threading.Event()
            loop.call_soon(iteration_ended.set)
            try:
                loop.run_in_executor(None, self._serve_waiters, iteration_ended)
            except BaseException:  # no executor (the loop is closing): serve nobody
                with self._state:
                    self._serving = False
                    self._waiters.remove((end, waiter))
                raise
        await waiter

    def _serve_waiters(self, iteration_ended: threading.Event) -> None:
        # Bounded: a loop stopped before the end of that iteration never says so.
        iteration_ended.wait(_ITERATION_WAIT)
        while True:
            with self._state:
                waiters, self._waiters = self._waiters, []
                if not waiters:
                    self._serving = False
                    return
            error: BaseException | None = None
            try:
                self.wait_durable(max(end for end, _ in waiters))
            except BaseException as exc:
                error = exc
            # A failure of a later group leaves the records synced before it durable.
            settle_from_a_thread(
                (waiter, error if error is not None and self._durable < end else None)
                for end, waiter in waiters
            )

    def close(self) -> None:
        """Release the pack (and its lock: it is sealed from now on), once what was
        appended to it is durable: a writer between its append and its wait still gets
        its record synced and indexed."""
        with suppress(BaseException):
            self.wait_durable(self._appended)
        with self._state:
            while self._syncing:
                self._state.wait()
            fd, self._fd = self._fd, None
            if self.error is None:
                self.error = OSError("pack closed")
            self._state.notify_all()
        if fd is not None:
            os.close(fd)
