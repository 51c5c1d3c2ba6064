"""Keeping the packs and their index in step: re-indexing what an index update lost, and
compaction, which rewrites the packs that are mostly dead records.

Compaction copies a pack's live records to a new pack, fdatasyncs it, switches the index
rows in one (durable) transaction, and only then unlinks the old pack. A crash before the
switch leaves the old pack authoritative and the new one without a live row (it goes the
next time); after it, the old one has no live row and goes the next time. Only sealed
packs (whose writer no longer holds their lock) are touched, and one compactor runs at a
time on a data directory (a lock file).
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from typing import Final

from tfstorage.blobs.pack_files import (
    crash_point,
    create_pack,
    lock_sealed,
    pack_names,
    pread_exact,
    pwrite_all,
    temp_entries,
)
from tfstorage.blobs.pack_format import HEADER_SIZE, decode_header, scan
from tfstorage.blobs.pack_index import Move, PackIndex

COMPACTION_LOCK: Final = "compact.lock"
COMPACTION_WAIT: Final = 60.0  # seconds a compactor waits for another to finish
_COPY_BATCH: Final = 4 * 1024 * 1024


class _Mismatch(Exception):
    pass


@dataclass(frozen=True, slots=True)
class CompactionReport:
    packs_removed: int = 0  # empty packs unlinked
    packs_rewritten: int = 0
    bytes_reclaimed: int = 0


def recover(directory: str, index: PackIndex) -> int:
    """Index the records of every sealed pack past its indexed-through offset; returns
    how many were found. Packs still being written are their writers' business."""
    states = index.packs()
    found = 0
    for name in pack_names(directory):
        path = os.path.join(directory, name)
        state = states.get(name)
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            continue
        if state is not None and state.indexed_through >= size:
            continue
        fd = lock_sealed(path)
        if fd is None:
            continue
        try:
            found += recover_pack(name, fd, index)
        finally:
            os.close(fd)
    return found


def recover_pack(name: str, fd: int, index: PackIndex) -> int:
    """Index the valid records of the locked pack `fd` past its indexed-through offset."""
    state = index.packs().get(name)
    start = state.indexed_through if state is not None else 0
    size = os.fstat(fd).st_size
    if start >= size:
        return 0
    records = list(scan(fd, start, size))
    through = records[-1].end if records else start
    index.record(name, records, through, found=True)
    return len(records)


def compact(directory: str, index: PackIndex, min_dead_share: float) -> CompactionReport:
    """Remove sealed packs with no live record, and rewrite those whose share of dead
    bytes (replaced, deleted, torn) is over `min_dead_share`. Waits for another
    compactor to finish first, then judges the packs afresh: the other may have judged
    them before this process deleted blobs (two workers' start-up maintenance did, and
    the space stayed taken until the next GC). Skipped (an empty report) if the other
    runs on past COMPACTION_WAIT."""
    lock = os.open(os.path.join(directory, COMPACTION_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        if not _lock_within(lock, COMPACTION_WAIT):
            return CompactionReport()
        removed = rewritten = reclaimed = 0
        for name in pack_names(directory):
            path = os.path.join(directory, name)
            fd = lock_sealed(path)
            if fd is None:
                continue  # still being appended to (or gone meanwhile)
            try:
                recover_pack(name, fd, index)
                size = os.fstat(fd).st_size
                live = index.live_bytes(name)
                if live == 0:
                    os.unlink(path)
                    index.forget_pack(name)
                    removed += 1
                    reclaimed += size
                elif size > live and (size - live) / size > min_dead_share:
                    try:
                        reclaimed += size - _rewrite(directory, name, fd, index)
                    except _Mismatch:
                        continue  # left for the scrub (which reads every blob) to report
                    rewritten += 1
            finally:
                os.close(fd)
        _forget_missing(directory, index)
        return CompactionReport(removed, rewritten, reclaimed)
    finally:
        os.close(lock)


def _lock_within(fd: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        else:
            return True


def _rewrite(directory: str, name: str, fd: int, index: PackIndex) -> int:
    """Copy the live records of the locked pack `fd` to a new pack and switch to it;
    returns the new pack's size."""
    records = index.live_records(name)
    total = sum(HEADER_SIZE + length for _, _, length in records)
    new_name, new_fd = create_pack(directory)
    try:
        index.reserve(new_name, total)
        moves: list[Move] = []
        position = 0
        for blob_id, offset, length in records:
            data = pread_exact(fd, HEADER_SIZE + length, offset)
            header = decode_header(data, offset)
            if header is None or header.blob_id != blob_id or header.length != length:
                # The index points at something else than a record of this blob: copying
                # would only carry the confusion over. Leave this pack alone.
                raise _Mismatch
            pwrite_all(new_fd, data, position)
            moves.append(Move(blob_id, offset, position, len(data)))
            position += len(data)
        crash_point("pack-compact-copied")
        os.fdatasync(new_fd)
        crash_point("pack-compact-synced")
        left = index.switch(name, new_name, moves)
        crash_point("pack-compact-switched")
        if left == 0:
            os.unlink(os.path.join(directory, name))
            index.forget_pack(name)
        return position
    finally:
        os.close(new_fd)


def _forget_missing(directory: str, index: PackIndex) -> None:
    present = set(pack_names(directory))
    for name in index.packs():
        if name not in present:
            index.forget_pack(name)


def sweep_temp_packs(directory: str, older_than: float) -> int:
    """Remove packs whose creation was interrupted before they got their name."""
    removed = 0
    for entry in temp_entries(directory):
        try:
            if entry.stat().st_mtime >= older_than:
                continue
            fd = lock_sealed(entry.path)
            if fd is None:
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            finally:
                os.close(fd)
        except FileNotFoundError:
            continue
    return removed
