"""The pack store: the blob contract with small (packed) and big (file) blobs, and what
is particular to packs: group syncs, torn tails, the index rebuilt from the packs,
compaction, several processes on one root."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.blobs.contract import BlobStoreContract, MultipartContract, chunked, read_all
from tests.blobs.pack_worker import content
from tfstorage.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, new_blob_id
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
from tfstorage.blobs.pack_maintenance import COMPACTION_LOCK, CompactionReport, compact
from tfstorage.blobs.packs import PackedBlobStore
from tfstorage.blobs.tiered import TieredBlobStore
from tfstorage.config import load_settings
from tfstorage.errors import ConfigError, InsufficientStorage
from tfstorage.service.backends import build_blob_store

KiB = 1024
MiB = 1024 * KiB


class TestPackedBlobStore(BlobStoreContract, MultipartContract):
    """Blobs up to 4 MiB packed: nearly every blob of the contract goes into packs."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = PackedBlobStore(tmp_path / "blobs", threshold=4 * MiB, pack_size=8 * MiB)
        yield store
        await store.close()


class TestPackedBlobStoreDefaultThreshold(BlobStoreContract):
    """The default threshold (64 KiB): small blobs packed, big ones files."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = PackedBlobStore(tmp_path / "blobs")
        yield store
        await store.close()


# What is particular to packs -------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def worker(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`tests/blobs/pack_worker.py` in a process of its own."""
    environment = dict(os.environ, **(env or {}))
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return subprocess.Popen(
        [sys.executable, "-m", "tests.blobs.pack_worker", *args],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )


def packs_dir(root: Path) -> Path:
    return root / ".packs"


def pack_files(root: Path) -> list[Path]:
    return sorted(packs_dir(root).glob("*.pack"))


def packs_size(root: Path) -> int:
    return sum(path.stat().st_size for path in pack_files(root))


async def packed_bytes(store: PackedBlobStore) -> int:
    """What the packs must hold at least: every packed blob's record."""
    total = 0
    for path in pack_files(store.root):
        conn = sqlite3.connect(packs_dir(store.root) / "index.sqlite")
        try:
            (count, length) = conn.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM blobs WHERE pack = ?",
                (path.name,),
            ).fetchone()
        finally:
            conn.close()
        total += count * HEADER_SIZE + length
    return total


async def put_all(store: BlobStore, blobs: dict[str, bytes]) -> None:
    async with anyio.create_task_group() as tg:
        for blob_id, data in blobs.items():
            tg.start_soon(store.put, blob_id, chunked(data))


async def assert_intact(store: BlobStore, blobs: dict[str, bytes]) -> None:
    for blob_id, data in blobs.items():
        assert await read_all(store, blob_id) == data, blob_id
        assert (await store.stat(blob_id)).size == len(data)


async def delete_each(store: BlobStore, blob_ids: list[str]) -> dict[str, str]:
    """Delete all at once; "deleted" or "failed" (BlobStoreUnavailable) by blob id."""
    outcomes: dict[str, str] = {}

    async def delete(blob_id: str) -> None:
        try:
            await store.delete(blob_id)
            outcomes[blob_id] = "deleted"
        except BlobStoreUnavailable:
            outcomes[blob_id] = "failed"

    async with anyio.create_task_group() as tg:
        for blob_id in blob_ids:
            tg.start_soon(delete, blob_id)
    return outcomes


def small_blobs(count: int, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {rng.randbytes(16).hex(): rng.randbytes(rng.randrange(0, 6000)) for _ in range(count)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.mark.anyio
async def test_concurrent_puts_share_syncs(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PackedBlobStore(root)
    syncs: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        syncs.append(fd)
        time.sleep(0.01)  # a disk's flush: the puts arriving meanwhile wait for the next
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    blobs = {new_blob_id(): os.urandom(4096) for _ in range(64)}
    await put_all(store, blobs)
    # One fdatasync per put would be 64; a group covers every put waiting for it.
    assert 1 <= len(syncs) <= 16, len(syncs)
    await assert_intact(store, blobs)
    assert list(root.glob("[0-9a-f][0-9a-f]")) == []  # no file blob among them
    await store.close()


@pytest.mark.anyio
async def test_puts_run_in_one_loop_iteration_share_one_sync(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync of a group waits for the end of the loop iteration that asked for it:
    the other puts that iteration runs append their records first. (Not waiting, its
    thread would sync after the first append while the others were appending.)"""
    store = PackedBlobStore(root)
    await store.put(new_blob_id(), chunked(b"first"))  # the pack exists
    syncs: list[int] = []
    real_sync, real_pwrite = os.fdatasync, os.pwrite

    def fdatasync(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    def slow_pwrite(fd: int, data: Any, offset: int) -> int:
        time.sleep(0.002)  # the GIL is free meanwhile, as in a real write
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "pwrite", slow_pwrite)
    blobs = {new_blob_id(): os.urandom(4096) for _ in range(8)}
    await put_all(store, blobs)
    assert len(syncs) == 1, syncs
    await assert_intact(store, blobs)
    await store.close()


def test_a_sync_that_cannot_start_fails_its_put_and_the_next_ones_still_sync(
    root: Path,
) -> None:
    """No executor (the loop is closing): that put fails instead of hanging, and the
    next puts start a sync of their own."""
    store = PackedBlobStore(root)

    async def put_without_executor() -> None:
        executor = ThreadPoolExecutor(1)
        executor.shutdown()
        asyncio.get_running_loop().set_default_executor(executor)
        await store.put(new_blob_id(), chunked(b"lost"))

    with pytest.raises(RuntimeError):
        asyncio.run(asyncio.wait_for(put_without_executor(), 10))
    kept = {new_blob_id(): b"kept"}

    async def put_again() -> None:
        await put_all(store, kept)
        await assert_intact(store, kept)
        await store.close()

    asyncio.run(asyncio.wait_for(put_again(), 10))


def test_a_loop_stopped_before_its_iteration_ended_does_not_stall_the_next_syncs(
    tmp_path: Path,
) -> None:
    """A group's sync waits for the end of the loop iteration that asked for it, but not
    for ever: a loop stopped within that iteration never ends it."""
    published: list[Record] = []
    pack = ActivePack(
        *create_pack(str(tmp_path)), lambda _name, group, _end: published.extend(group)
    )

    def append(blob_id: str) -> int:
        data = encode_record(blob_id, b"x", 0.0)
        record = Record(pack.size, blob_id, 1, 0.0, 0)
        pack.append(record, data)
        return pack.size

    loop = asyncio.new_event_loop()
    loop.call_soon(loop.stop)  # runs in the same iteration as the wait below
    abandoned = loop.create_task(pack.durable(append(new_blob_id())))
    loop.run_forever()
    assert not abandoned.done()
    loop.close()
    asyncio.run(asyncio.wait_for(pack.durable(append(new_blob_id())), 10))
    assert len(published) == 2
    pack.close()


@pytest.mark.anyio
async def test_concurrent_deletes_share_a_transaction(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deletes asked for while a removal runs are removed together in the next one (the
    duplicates of uploads of one content are deleted as fast as they come)."""
    store = PackedBlobStore(root)
    kept = {new_blob_id(): os.urandom(300)}
    blobs = {new_blob_id(): os.urandom(100 + n) for n in range(64)}
    await put_all(store, blobs | kept)
    groups: list[int] = []
    real = PackIndex.remove_all

    def remove_all(index: PackIndex, blob_ids: list[str]) -> None:
        groups.append(len(blob_ids))
        time.sleep(0.01)  # a busy index: the deletes arriving meanwhile wait for the next
        real(index, blob_ids)

    monkeypatch.setattr(PackIndex, "remove_all", remove_all)
    async with anyio.create_task_group() as tg:
        for blob_id in [*blobs, *list(blobs)[:5]]:  # a blob deleted twice at once too
            tg.start_soon(store.delete, blob_id)
    assert sum(groups) == 69 and len(groups) <= 16, groups
    for blob_id in blobs:
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)
    await assert_intact(store, kept)
    [state] = PackIndex(str(root / ".packs" / "index.sqlite")).packs().values()
    assert state.live == HEADER_SIZE + 300
    assert state.dead == sum(HEADER_SIZE + len(data) for data in blobs.values())
    await store.close()


@pytest.mark.anyio
async def test_a_failed_group_removal_fails_each_of_its_deletes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PackedBlobStore(root)
    blobs = {new_blob_id(): os.urandom(100) for _ in range(8)}
    await put_all(store, blobs)

    def remove_all(index: PackIndex, blob_ids: list[str]) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(PackIndex, "remove_all", remove_all)
    assert await delete_each(store, list(blobs)) == dict.fromkeys(blobs, "failed")
    monkeypatch.undo()
    await assert_intact(store, blobs)  # nothing was removed
    await store.delete(next(iter(blobs)))  # and the next group goes through
    with pytest.raises(BlobNotFound):
        await store.stat(next(iter(blobs)))
    await store.close()


@pytest.mark.anyio
async def test_a_file_that_cannot_be_removed_fails_only_its_own_delete(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PackedBlobStore(root)
    blobs = {new_blob_id(): os.urandom(100) for _ in range(8)}
    await put_all(store, blobs)
    stuck = next(iter(blobs))
    real = PackedBlobStore._local_path_unlink

    def unlink(self: PackedBlobStore, blob_id: str) -> None:
        if blob_id == stuck:
            raise PermissionError(errno.EACCES, "Permission denied")
        real(self, blob_id)

    monkeypatch.setattr(PackedBlobStore, "_local_path_unlink", unlink)
    outcomes = await delete_each(store, list(blobs))
    assert outcomes == {b: "failed" if b == stuck else "deleted" for b in blobs}
    await store.close()


@pytest.mark.anyio
async def test_puts_on_a_loop_await_their_sync_without_blocking_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put's record goes in on the loop; its fsync runs in one thread that serves
    every put waiting (not a thread per put), while the loop goes on serving."""
    store = PackedBlobStore(root)
    loop_thread, syncers, waiters = threading.get_ident(), set[int](), set[int]()
    real, real_wait = os.fdatasync, ActivePack.wait_durable

    syncing = threading.Event()

    def fdatasync(fd: int) -> None:
        syncers.add(threading.get_ident())
        syncing.set()
        time.sleep(0.05)
        syncing.clear()
        real(fd)

    def wait_durable(pack: ActivePack, end: int) -> None:
        waiters.add(threading.get_ident())
        real_wait(pack, end)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(ActivePack, "wait_durable", wait_durable)
    blobs = {new_blob_id(): os.urandom(4096) for _ in range(32)}
    ticks_while_syncing = 0
    async with anyio.create_task_group() as tasks:
        for blob_id, data in blobs.items():
            tasks.start_soon(store.put, blob_id, chunked(data))
        for _ in range(100):  # 0.5 s or more: the puts' syncs take 50 ms each
            await anyio.sleep(0.005)
            ticks_while_syncing += syncing.is_set()
    assert ticks_while_syncing >= 3  # the loop ran while a sync did
    assert loop_thread not in syncers | waiters
    assert len(waiters) <= 2, f"{len(waiters)} threads waited for 32 puts"
    await assert_intact(store, blobs)
    await store.close()


@pytest.mark.anyio
async def test_a_put_returns_only_once_synced(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PackedBlobStore(root)

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fdatasync", broken)
    blob_id = new_blob_id()
    with pytest.raises(BlobStoreUnavailable):
        await store.put(blob_id, chunked(b"never acknowledged"))
    with pytest.raises(BlobNotFound):
        await store.stat(blob_id)
    monkeypatch.undo()
    await store.put(blob_id, chunked(b"then it works"))  # in a new pack
    assert await read_all(store, blob_id) == b"then it works"
    assert len(pack_files(root)) == 2
    await store.close()


def test_a_cached_read_never_waits_for_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "file"
    data = os.urandom(3 * 4096)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert pread_cached(fd, 5000, 4000) == data[4000:9000]  # just written: cached
        os.fsync(fd)  # clean pages, which the kernel may drop ...
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # ... and now does
        with pytest.raises(NotCached):
            pread_cached(fd, 5000, 4000)
        assert pread_exact(fd, 5000, 4000) == data[4000:9000]  # read from the disk
        assert pread_cached(fd, 5000, 4000) == data[4000:9000]  # cached again
        with pytest.raises(EOFError):
            pread_cached(fd, 10, len(data) - 5)
    finally:
        os.close(fd)


@pytest.mark.anyio
async def test_a_packed_blob_is_read_on_the_loop_unless_it_is_not_cached(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PackedBlobStore(root)
    blob_id, data = new_blob_id(), os.urandom(5000)
    await store.put(blob_id, chunked(data))
    loop_thread = threading.get_ident()
    readers: list[tuple[str, bool]] = []
    real_pread, real_preadv = os.pread, os.preadv

    def pread(*args: Any) -> bytes:
        readers.append(("wait", threading.get_ident() == loop_thread))
        return real_pread(*args)

    def preadv(*args: Any) -> int:
        readers.append(("nowait", threading.get_ident() == loop_thread))
        return real_preadv(*args)

    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(os, "preadv", preadv)
    assert await read_all(store, blob_id) == data
    assert readers == [("nowait", True)]  # in the page cache: read here, at once
    readers.clear()
    for pack in pack_files(root):
        with pack.open("rb") as f:  # synced already: the kernel may drop the pages
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    assert await read_all(store, blob_id) == data
    # Not cached: tried here, then read in a worker thread, which may wait.
    assert readers == [("nowait", True), ("wait", False)]
    await store.close()


@pytest.mark.anyio
async def test_big_and_small_copies_of_an_id_replace_each_other(root: Path) -> None:
    store = PackedBlobStore(root, threshold=1000)
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"small"))
    await store.put(blob_id, chunked(bytes(5000)))
    assert await read_all(store, blob_id) == bytes(5000)
    assert [info.size async for info in store.list_blobs()] == [5000]
    await store.put(blob_id, chunked(b"small again"))
    assert await read_all(store, blob_id) == b"small again"
    assert [info.size async for info in store.list_blobs()] == [11]
    assert list(root.glob("[0-9a-f][0-9a-f]/*/*")) == []  # the file copy is gone
    await store.close()


@pytest.mark.anyio
async def test_torn_tail_is_ignored(root: Path) -> None:
    store = PackedBlobStore(root)
    blobs = small_blobs(20)
    await put_all(store, blobs)
    await store.close()
    [pack] = pack_files(root)
    torn_id = new_blob_id()
    record = encode_record(torn_id, os.urandom(3000), time.time())
    with pack.open("ab") as f:
        f.write(record[:-1000])  # the crash came mid-append
    # The index may have lost anything: rebuilt from the packs alone.
    for path in packs_dir(root).glob("index.sqlite*"):
        path.unlink()
    store = PackedBlobStore(root)
    await assert_intact(store, blobs)
    with pytest.raises(BlobNotFound):
        await store.stat(torn_id)
    assert {info.blob_id async for info in store.list_blobs()} == set(blobs)
    # The torn bytes are garbage: compaction reclaims them.
    report = await store.compact(0.0)
    assert report.packs_rewritten == 1
    assert packs_size(root) == await packed_bytes(store)
    await assert_intact(store, blobs)
    await store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["deleted", "behind"])
async def test_index_is_rebuilt_from_the_packs(root: Path, how: str) -> None:
    store = PackedBlobStore(root, pack_size=20_000)
    blobs = small_blobs(40)
    await put_all(store, blobs)
    gone = list(blobs)[:5]
    for blob_id in gone:
        await store.delete(blob_id)
    await store.close()
    index = packs_dir(root) / "index.sqlite"
    if how == "deleted":
        for path in packs_dir(root).glob("index.sqlite*"):
            path.unlink()
        expected = blobs  # deletes leave no trace in packs: those come back, as orphans
    else:
        # The last updates were lost (a power cut before SQLite's WAL reached the disk):
        # every pack indexed only through its first half, their later rows missing.
        conn = sqlite3.connect(index)
        with conn:
            packs = conn.execute("SELECT name, indexed_through FROM packs").fetchall()
            for name, through in packs:
                (boundary,) = conn.execute(  # the first record past the middle
                    "SELECT min(offset) FROM blobs WHERE pack = ? AND offset >= ?",
                    (name, through // 2),
                ).fetchone()
                if boundary is None:
                    continue
                conn.execute("DELETE FROM blobs WHERE pack = ? AND offset >= ?", (name, boundary))
                conn.execute(
                    "UPDATE packs SET indexed_through = ? WHERE name = ?", (boundary, name)
                )
        conn.close()
        expected = {k: v for k, v in blobs.items() if k not in gone}
    store = PackedBlobStore(root, pack_size=20_000)
    await assert_intact(store, expected)
    assert {info.blob_id async for info in store.list_blobs()} >= set(expected)
    await store.close()


@pytest.mark.anyio
async def test_a_compactor_waits_for_another_then_judges_the_packs_afresh(root: Path) -> None:
    """Two workers' start-up maintenance: one compacts (finding little dead) while the
    other deletes blobs; the other's compaction must not be skipped, or the space stays
    taken until the next GC."""
    store = PackedBlobStore(root)
    blobs = small_blobs(100, seed=2)
    await put_all(store, blobs)
    await store.compact(0.99)  # seals the active pack; nothing dead yet
    other = os.open(packs_dir(root) / COMPACTION_LOCK, os.O_RDWR)
    fcntl.flock(other, fcntl.LOCK_EX)  # another process's compactor, running
    for blob_id in list(blobs)[:80]:
        await store.delete(blob_id)
        del blobs[blob_id]
    before = packs_size(root)
    threading.Timer(0.5, os.close, args=(other,)).start()  # ... and done
    report = await store.compact()
    assert report.packs_rewritten + report.packs_removed == 1
    assert packs_size(root) < before / 2
    await assert_intact(store, blobs)
    await store.close()


@pytest.mark.anyio
async def test_compaction_reclaims_space_and_keeps_every_live_blob(root: Path) -> None:
    store = PackedBlobStore(root, pack_size=64 * KiB)
    blobs = small_blobs(300, seed=1)
    await put_all(store, blobs)
    ids = list(blobs)
    for blob_id in ids[::3]:  # deleted
        await store.delete(blob_id)
        del blobs[blob_id]
    for blob_id in ids[1::3]:  # replaced by new bytes
        blobs[blob_id] = os.urandom(100)
        await store.put(blob_id, chunked(blobs[blob_id]))
    await store.close()  # seals the active pack
    before = packs_size(root)
    store = PackedBlobStore(root, pack_size=64 * KiB)
    report = await store.compact()  # the default share: only mostly dead packs
    assert report.packs_rewritten + report.packs_removed > 0
    assert packs_size(root) < before
    await assert_intact(store, blobs)
    await store.compact(0.0)
    assert packs_size(root) == await packed_bytes(store)
    assert await store.compact(0.0) == CompactionReport()  # nothing left to do
    await assert_intact(store, blobs)
    assert {info.blob_id async for info in store.list_blobs()} == set(blobs)
    await store.close()


@pytest.mark.anyio
async def test_gc_sweep_compacts(root: Path) -> None:
    store = PackedBlobStore(root, pack_size=16 * KiB)
    blobs = small_blobs(50, seed=2)
    await put_all(store, blobs)
    for blob_id in blobs:
        await store.delete(blob_id)
    await store.close()
    store = PackedBlobStore(root, pack_size=16 * KiB)
    assert await store.sweep_incomplete(time.time() - 3600) > 0
    assert pack_files(root) == []
    await store.close()


@pytest.mark.anyio
async def test_reader_racing_a_compaction_finds_the_moved_blob(root: Path) -> None:
    store = PackedBlobStore(root)
    blobs = small_blobs(10, seed=3)
    await put_all(store, blobs)
    for blob_id in list(blobs)[:8]:
        await store.delete(blob_id)
        del blobs[blob_id]
    await store.close()
    store = PackedBlobStore(root)
    [old_pack] = pack_files(root)
    target = next(iter(blobs))
    index = store._index
    real_locate = index.locate
    compacted: list[CompactionReport] = []

    def locate_then_compact(blob_id: str) -> Location | None:
        found = real_locate(blob_id)
        if not compacted:  # between the lookup and the read, the pack goes
            compacted.append(compact(str(packs_dir(root)), index, 0.0))
        return found

    index.locate = locate_then_compact  # type: ignore[method-assign]
    assert await read_all(store, target) == blobs[target]
    assert compacted[0].packs_rewritten == 1 and not old_pack.exists()
    await assert_intact(store, blobs)
    await store.close()


@pytest.mark.anyio
async def test_an_active_pack_is_never_compacted(root: Path) -> None:
    writer = PackedBlobStore(root)
    other = PackedBlobStore(root)  # another process's store, say
    blob_id = new_blob_id()
    await writer.put(blob_id, chunked(b"x"))
    await writer.delete(blob_id)
    assert await other.compact(0.0) == CompactionReport()
    assert len(pack_files(root)) == 1  # still the writer's, though empty of live blobs
    later = new_blob_id()
    await writer.put(later, chunked(b"appended to the same pack"))
    assert await read_all(other, later) == b"appended to the same pack"
    await writer.close()
    assert (await other.compact(0.0)).packs_rewritten == 1
    assert await read_all(other, later) == b"appended to the same pack"
    await other.close()


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_two_processes_write_one_root_and_read_each_other(root: Path) -> None:
    PackedBlobStore(root)  # the directory exists before both start
    writers = [worker("write", str(root), str(seed), "200") for seed in (1, 2)]
    outputs = [w.communicate(timeout=50)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    ids = [
        [line.split()[1] for line in out.splitlines() if line.startswith("ACK")] for out in outputs
    ]
    assert [len(i) for i in ids] == [200, 200]
    # Each reads the other's blobs.
    readers = [worker("read", str(root), *ids[1]), worker("read", str(root), *ids[0])]
    for reader, expected in zip(readers, (ids[1], ids[0]), strict=True):
        out = reader.communicate(timeout=50)[0]
        assert [line.split()[1] for line in out.splitlines()] == expected
    store = PackedBlobStore(root)
    await assert_intact(store, {i: content(i) for i in ids[0] + ids[1]})
    assert len(pack_files(root)) >= 2  # one pack per writer at least
    await store.close()


def test_pack_threshold_setting_picks_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packed = build_blob_store(load_settings(data_dir=tmp_path))  # the default: 64 KiB
    assert isinstance(packed, PackedBlobStore) and packed.root == tmp_path / "blobs"
    assert load_settings(data_dir=tmp_path).pack_threshold == 64 * 1024
    # Off from the environment (a string, which no size parser takes for 0).
    for zero in ("0", "0KB"):
        monkeypatch.setenv("PACK_THRESHOLD", zero)
        monkeypatch.setenv("SCRUB_BYTES_PER_SECOND", zero)
        off = load_settings(data_dir=tmp_path)
        assert off.pack_threshold == 0 and off.scrub_bytes_per_second == 0
        assert type(build_blob_store(off)) is LocalBlobStore
    monkeypatch.delenv("PACK_THRESHOLD")
    monkeypatch.setenv("MAX_FILE_SIZE", "0")
    with pytest.raises(ConfigError, match="MAX_FILE_SIZE"):  # 0 is no size for the others
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("MAX_FILE_SIZE")
    archived = build_blob_store(
        load_settings(data_dir=tmp_path, pack_threshold="4KB", archive_storage_type="local")
    )
    assert isinstance(archived, TieredBlobStore)
    assert isinstance(archived.primary, PackedBlobStore)
    assert type(archived.archive) is LocalBlobStore  # only the primary packs
    for wrong in ("9MB", "-1"):
        with pytest.raises(ConfigError, match="PACK_THRESHOLD"):
            load_settings(data_dir=tmp_path, pack_threshold=wrong)


@pytest.mark.anyio
async def test_archive_tier_moves_packed_blobs(tmp_path: Path) -> None:
    primary = PackedBlobStore(tmp_path / "blobs")
    store = TieredBlobStore(primary, LocalBlobStore(tmp_path / "archive"))
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"cold bytes"))
    await store.archive.put(blob_id, await primary.open(blob_id))  # lifecycle's move
    await primary.delete(blob_id)
    assert await read_all(store, blob_id) == b"cold bytes"
    assert (await store.stat(blob_id)).size == 10
    await store.close()


@pytest.mark.anyio
async def test_compaction_seals_its_own_active_pack_when_worth_it(root: Path) -> None:
    store = PackedBlobStore(root)
    blobs = small_blobs(20, seed=4)
    await put_all(store, blobs)
    for blob_id in list(blobs)[:5]:
        await store.delete(blob_id)
        del blobs[blob_id]
    assert await store.compact() == CompactionReport()  # a quarter dead: left as it is
    [active] = pack_files(root)
    for blob_id in list(blobs)[:10]:
        await store.delete(blob_id)
        del blobs[blob_id]
    report = await store.compact()  # three quarters dead: sealed, then rewritten
    assert report.packs_rewritten == 1 and not active.exists()
    more = small_blobs(5, seed=5)
    await put_all(store, more)  # into a new pack
    await assert_intact(store, blobs | more)
    assert len(pack_files(root)) == 2
    await store.close()


@pytest.mark.anyio
async def test_a_failed_append_ends_its_pack(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PackedBlobStore(root)
    first = new_blob_id()
    await store.put(first, chunked(b"before"))
    real = os.pwrite

    def pwrite_half(fd: int, data: Any, offset: int) -> int:
        real(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", pwrite_half)
    failed = new_blob_id()
    with pytest.raises(InsufficientStorage):
        await store.put(failed, chunked(b"x" * 1000))
    monkeypatch.undo()
    after = new_blob_id()
    await store.put(after, chunked(b"after"))
    assert len(pack_files(root)) == 2  # the torn pack was left for a new one
    await store.close()
    for path in packs_dir(root).glob("index.sqlite*"):
        path.unlink()
    store = PackedBlobStore(root)  # rebuilt from the packs: the torn record is not one
    assert {info.blob_id async for info in store.list_blobs()} == {first, after}
    assert await read_all(store, first) == b"before"
    await store.close()


def test_index_records_a_group_in_a_few_statements_with_each_record_judged(
    tmp_path: Path,
) -> None:
    """PackIndex.record looks a group's ids up together and writes them together; each
    record is still judged as if alone: a new one is placed, one replacing a blob placed
    in another pack moves it (that pack's bytes turn dead), and a copy found by a scan
    that is older than the place it would replace does not win. More records than one
    lookup takes (500) are all placed."""
    index = PackIndex(str(tmp_path / "index.sqlite"))
    size = HEADER_SIZE + 10
    old = [
        Record(offset=i * size, blob_id=f"{i:032x}", length=10, modified=100.0, data_crc=0)
        for i in range(3)
    ]
    index.record("a.pack", old, old[-1].end, found=False)

    fresh = [
        Record(offset=i * size, blob_id=f"{i + 10:032x}", length=10, modified=200.0, data_crc=0)
        for i in range(1200)
    ]
    # Blob 0 written again (replaced), and blob 1 and 2 found by a scan: 1 newer, 2 older.
    moved = Record(
        offset=1200 * size, blob_id=old[0].blob_id, length=10, modified=300.0, data_crc=0
    )
    newer = Record(
        offset=1201 * size, blob_id=old[1].blob_id, length=10, modified=150.0, data_crc=0
    )
    older = Record(offset=1202 * size, blob_id=old[2].blob_id, length=10, modified=50.0, data_crc=0)
    index.record("b.pack", [*fresh, moved], moved.end, found=False)
    index.record("b.pack", [newer, older], older.end, found=True)

    assert index.locate(moved.blob_id) == Location("b.pack", moved.offset, 10, 300.0)
    assert index.locate(newer.blob_id) == Location("b.pack", newer.offset, 10, 150.0)
    assert index.locate(older.blob_id) == Location("a.pack", old[2].offset, 10, 100.0)
    assert all(index.locate(r.blob_id) == Location("b.pack", r.offset, 10, 200.0) for r in fresh)
    packs = index.packs()
    assert (packs["a.pack"].live, packs["a.pack"].dead) == (size, 2 * size)
    assert (packs["b.pack"].live, packs["b.pack"].dead) == (1202 * size, size)
    assert packs["b.pack"].indexed_through == older.end
    # Recording the same group again changes nothing: every record is placed already.
    index.record("b.pack", [*fresh, moved], moved.end, found=False)
    assert index.packs() == packs
    index.close()


def test_a_group_of_new_blobs_is_recorded_without_a_lookup(tmp_path: Path) -> None:
    """The sync thread's common case, a group of blob ids the index has never seen, is
    written without looking them up first: no SELECT, one INSERT for all the rows, one
    UPDATE of the pack's row (its live bytes and indexed-through offset together). Each statement there waits for the
    GIL, which the event loop holds; a group with a known id still goes the general way
    (the test above)."""
    index = PackIndex(str(tmp_path / "index.sqlite"))
    index.close()  # the pooled connection: the next ones are traced
    statements: list[str] = []
    connect = index._connect

    opened: list[sqlite3.Connection] = []

    def traced() -> sqlite3.Connection:
        conn = connect()
        conn.set_trace_callback(statements.append)
        opened.append(conn)
        return conn

    index._connect = traced  # type: ignore[method-assign]
    size = HEADER_SIZE + 10
    groups = [
        [
            Record(
                offset=(g * 3 + i) * size,
                blob_id=f"{g * 3 + i:032x}",
                length=10,
                modified=1.0,
                data_crc=0,
            )
            for i in range(3)
        ]
        for g in range(2)
    ]
    index.record("a.pack", groups[0], groups[0][-1].end, found=False)
    statements.clear()
    index.record("a.pack", groups[1], groups[1][-1].end, found=False)
    kinds = [s.split()[0] for s in statements]
    assert kinds == ["BEGIN", "INSERT", "UPDATE", "COMMIT"], statements
    [state] = index.packs().values()
    assert (state.live, state.dead, state.indexed_through) == (6 * size, 0, 6 * size)
    assert all(
        index.locate(r.blob_id) == Location("a.pack", r.offset, 10, 1.0)
        for group in groups
        for r in group
    )
    # One id twice in a group: the general way, the earlier record's bytes dead.
    twice = [
        Record(offset=(6 + i) * size, blob_id=f"{99:032x}", length=10, modified=2.0, data_crc=0)
        for i in range(2)
    ]
    statements.clear()
    index.record("a.pack", twice, twice[-1].end, found=False)
    assert "SELECT" in [s.split()[0] for s in statements]
    assert len(opened) == 1  # the rolled-back attempt's connection, pooled and reused
    assert index.locate(twice[1].blob_id) == Location("a.pack", twice[1].offset, 10, 2.0)
    [state] = index.packs().values()
    assert (state.live, state.dead, state.indexed_through) == (7 * size, size, 8 * size)
    index.close()
