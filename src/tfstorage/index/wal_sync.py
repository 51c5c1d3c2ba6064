"""Durable SQLite commits without holding the write lock through an fsync.

With `synchronous=FULL` a WAL-mode COMMIT fsyncs the `-wal` file while it still holds
SQLite's one write lock, so writers of several processes (`WORKERS=N`) queue behind each
other's fsyncs. The index therefore runs `synchronous=NORMAL` (COMMIT writes the frames
and releases the lock, no fsync) and a writer calls `WalSyncer.sync()` after its COMMIT
and before its request is answered. Syncs are leader/follower: one `fsync` of the
`-wal` file covers every commit that had returned before it started, whichever
process or connection made it (fsync flushes the file, not the descriptor).

Why that is as durable as FULL (https://sqlite.org/pragma.html#pragma_synchronous,
https://sqlite.org/wal.html): "In WAL mode when synchronous is NORMAL (1), the WAL file
is synchronized before each checkpoint and the database file is synchronized after each
checkpoint and the WAL file header is synchronized when a WAL file begins to be reused
after a checkpoint". So when our fsync starts, a commit's frames are either still in the
`-wal` file (the fsync makes them durable), or a checkpoint has copied them into the
database and synced it before the WAL could be reset or overwritten. If the `-wal` file
is gone, the last connection closed: its checkpoint synced the database, then deleted
the WAL. A `-wal` file seen for the first time gets its directory fsynced too, as SQLite
does for a WAL it creates under FULL.

The caveat, accepted: between COMMIT and the fsync's return (a few ms) other readers,
in this or another process, already see the commit. Only a power loss or a kernel crash
in that window could then lose it (a killed process cannot: its writes are in the page
cache); the writer was never answered, so no acknowledged write is lost, and a reader
that acted on it with a write of its own commits after it in the same WAL, so that
write's fsync covers both. Under FULL a commit becomes visible only after its fsync;
here visibility comes first, by at most the fsync running plus ours.

Checkpoints run here too, in one thread of the process, not inside a COMMIT: the index's
connections set `wal_autocheckpoint=0`, and a sync asks for a PASSIVE checkpoint at most
every CHECKPOINT_INTERVAL. SQLite's own, at every 1000th page of WAL, runs in the
COMMIT that crosses it, and a COMMIT from the event loop runs on the loop's thread
(index/group_commit.py): its two fsyncs (WAL, then database) stalled every request.
A checkpoint changes nothing of the above: SQLite syncs the WAL before it copies frames
and the database after, whichever connection runs it.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time

from tfstorage.errors import InternalError

_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
# At most this often a sync asks for a checkpoint: at ~600 small commits a second the
# WAL then holds a few MB at most, as with SQLite's default of 1000 pages.
CHECKPOINT_INTERVAL = 0.25
# A WAL this long (in frames, ~16 MiB of 4 KiB pages) is started over from its beginning
# (below, `checkpoint`).
RESTART_FRAMES = 4096
log = logging.getLogger(__name__)


class WalSyncer:
    """One per database file and process; thread-safe."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.wal_path = f"{database}-wal"
        self._checkpoint_due = 0.0  # time.monotonic() from which a sync asks again
        self._checkpoint_lock = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        self._directory = os.path.dirname(os.path.abspath(database))
        self._cond = threading.Condition()
        self._started = 0  # number of the newest fsync begun
        self._finished = 0  # ... and of the newest one over
        self._running = False
        self._failed: dict[int, OSError] = {}
        # The WAL file last synced, kept open: while it is, no other file can have its
        # inode number, so a different (st_dev, st_ino) at the path means a new WAL.
        # Closed by forget() when the engine closes a connection (dispose, overflow),
        # so that a process that opens many databases does not keep a file each.
        self._fd_lock = threading.Lock()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def sync(self) -> None:
        """Return once every commit that returned before this call is on disk."""
        with self._cond:
            # A sync already running may have started before the caller's COMMIT
            # returned: only the next one surely covers it.
            target = self._started + 1
            while self._finished < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._cond.release()
                try:
                    error = self._fsync()
                    if error is None:
                        self._ask_for_checkpoint()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._finished = number
                    if error is not None:
                        self._failed[number] = error
                        self._failed.pop(number - 1000, None)
                    self._cond.notify_all()
            error = self._failed.get(target)
        if error is not None:
            # After a failed fsync the kernel may have dropped the dirty pages: no
            # later fsync can vouch for them, so this write is not acknowledged.
            raise InternalError("the metadata index could not be made durable") from error

    def forget(self) -> None:
        """Close the WAL file kept open; the next sync opens it (and its directory) again.
        The checkpoints' connection too."""
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = self._identity = None
        with self._checkpoint_lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database, as far as no reader needs it
        (PASSIVE: it waits for no one). Run by the process's checkpoint thread.

        SQLite writes the WAL from its beginning again only when a transaction starts
        with every frame copied. Under steady writes one always committed between a
        checkpoint's start and the next transaction, and the WAL grew for ever: 230 MiB
        after 20 s of 8 clients' 4 KiB PUTs, 400 MiB after 36 s of S3 PUTs, each lookup
        and a crash recovery going through more of it. So once it is RESTART_FRAMES
        long, RESTART: it holds off writers while it copies what the PASSIVE one left
        (a few frames), then the next transaction starts the WAL over. It waits for
        nothing (no busy timeout): a writer or a reader at work makes it give up at
        once, and the next checkpoint, a quarter of a second on, tries again. Waiting
        would hold every writer up behind a long reader (a big listing) each time;
        giving up, the WAL stayed at 20-50 MiB in the same runs."""
        with self._checkpoint_lock:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(
                    self.database, isolation_level=None, check_same_thread=False, timeout=0
                )
            busy, frames, _ = self._checkpointer.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
            if not busy and frames >= RESTART_FRAMES:
                self._checkpointer.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()

    def _ask_for_checkpoint(self) -> None:
        now = time.monotonic()
        if now >= self._checkpoint_due:
            self._checkpoint_due = now + CHECKPOINT_INTERVAL
            _checkpoints().put(self)

    def _fsync(self) -> OSError | None:
        try:
            with self._fd_lock:
                self._fsync_wal()
        except OSError as exc:
            return exc
        return None

    def _fsync_wal(self) -> None:
        try:
            fd = os.open(self.wal_path, _O_FLAGS)
        except FileNotFoundError:
            return  # every frame was checkpointed into the database (and synced)
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino)
        if identity == self._identity and self._fd is not None:
            os.close(fd)
            # fdatasync: the frames and the file's size, not its timestamps, which an
            # fsync would journal each time (8 clients' 4 KiB PUTs, interleaved A/B, 7
            # of 10 rounds faster, the slowest 891 against 698 PUT/s). The pack files
            # are synced the same way.
            os.fdatasync(self._fd)
            return
        try:
            os.fsync(fd)
            directory = os.open(self._directory, _O_FLAGS)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._identity = fd, identity


_SYNCERS: dict[str, WalSyncer] = {}
_SYNCERS_GUARD = threading.Lock()


_CHECKPOINTS: queue.SimpleQueue[WalSyncer] | None = None


def _checkpoints() -> queue.SimpleQueue[WalSyncer]:
    """The queue of the process's checkpoint thread, started on first use."""
    global _CHECKPOINTS
    with _SYNCERS_GUARD:
        if _CHECKPOINTS is None:
            _CHECKPOINTS = queue.SimpleQueue()
            worker = threading.Thread(
                target=_checkpoint_forever, args=(_CHECKPOINTS,), name="wal-checkpoints"
            )
            worker.daemon = True  # it holds nothing that exiting would lose
            worker.start()
        return _CHECKPOINTS


def _forget_checkpoints_after_fork() -> None:
    # A forked child has the queue but not the thread: it starts its own.
    global _CHECKPOINTS
    _CHECKPOINTS = None


os.register_at_fork(after_in_child=_forget_checkpoints_after_fork)


def _checkpoint_forever(asked: queue.SimpleQueue[WalSyncer]) -> None:
    while True:
        syncer = asked.get()
        try:
            syncer.checkpoint()
        except Exception:
            # The frames stay in the WAL, durable; the next sync asks again.
            log.warning("a checkpoint of %s failed", syncer.database, exc_info=True)


def wal_syncer(database: str) -> WalSyncer:
    """The process's syncer of `database` (a path), shared by all its engines: one
    leader's fsync then covers the commits of every one of them."""
    path = os.path.abspath(database)
    with _SYNCERS_GUARD:
        syncer = _SYNCERS.get(path)
        if syncer is None:
            syncer = _SYNCERS[path] = WalSyncer(path)
        return syncer
