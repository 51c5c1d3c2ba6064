from __future__ import annotations

import errno
import gc
import itertools
import os
import stat
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

import tfstorage.blobs.local as local_module
from tests.blobs.contract import (
    BlobStoreContract,
    MultipartContract,
    chunked,
    failing_after,
    read_all,
    read_chunks,
)
from tfstorage.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, new_blob_id
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.errors import InsufficientStorage

MiB = 1024 * 1024


class TestLocalBlobStore(BlobStoreContract, MultipartContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = LocalBlobStore(tmp_path / "blobs")
        yield store
        await store.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def store(root: Path) -> LocalBlobStore:
    return LocalBlobStore(root)


def temp_files(root: Path) -> list[str]:
    return os.listdir(root / ".tmp")


def open_fds(root: Path) -> set[str]:
    """This process's open file descriptors on files under `root` (other tests' files,
    closed by a garbage collection at any moment, must not disturb the count)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            found.add(f"{fd}:{target}")
    return found


def test_root_is_created_with_parents(tmp_path: Path) -> None:
    LocalBlobStore(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c" / ".tmp").is_dir()


@pytest.mark.anyio
async def test_layout_and_mode(store: LocalBlobStore, root: Path) -> None:
    blob_id = "0123456789abcdef" * 2
    await store.put(blob_id, chunked(b"hello"))
    path = root / "01" / "23" / blob_id
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 & ~_umask()
    assert temp_files(root) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.anyio
@pytest.mark.parametrize(
    "bad_id",
    [
        "",
        "../../etc/passwd",
        "/etc/passwd",
        "ab/cd/" + "a" * 26,
        "..",
        "AB" * 16,
        "ab" * 15,
        "ab" * 17,
        "a" * 31 + "\0",
        "a" * 31 + "/",
        "g" * 32,
    ],
)
async def test_malformed_ids_never_become_paths(
    store: LocalBlobStore, root: Path, tmp_path: Path, bad_id: str
) -> None:
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ValueError):
        await store.put(bad_id, chunked(b"x"))
    for operation in (store.open, store.stat, store.delete):
        with pytest.raises(ValueError):
            await operation(bad_id)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.anyio
async def test_put_fsyncs_file_then_renames_then_fsyncs_directories(
    store: LocalBlobStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    blob_id = "abcd" + "0" * 28
    await store.put(blob_id, chunked(b"data"))
    temp = events[0][1]
    assert os.path.dirname(temp) == str(root / ".tmp")
    assert events[1] == ("replace", str(root / "ab" / "cd" / blob_id))
    # The first blob creates both fan-out directories: their parents are fsynced too.
    assert sorted(events[2:]) == sorted(
        [("fsync", str(root / "ab" / "cd")), ("fsync", str(root / "ab")), ("fsync", str(root))]
    )
    events.clear()
    await store.put("abcd" + "1" * 28, chunked(b"more"))
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[2] == ("fsync", str(root / "ab" / "cd"))


@pytest.mark.anyio
async def test_chunks_are_coalesced_into_buffers(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(root, write_buffer_size=MiB)
    writes: list[int] = []
    real_writev = os.writev

    def writev(fd: int, buffers: list[bytes]) -> int:
        writes.append(sum(map(len, buffers)))
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", writev)
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(bytes(8 * MiB + 100), 64 * 1024))
    assert writes == [MiB] * 8 + [100]
    writes.clear()
    await store.put(new_blob_id(), chunked(bytes(3000), 1))  # tiny chunks: bounded iovecs
    assert sum(writes) == 3000 and len(writes) <= 10


@pytest.mark.anyio
async def test_reads_come_in_chunks_of_the_configured_size_cut_at_each_mib(root: Path) -> None:
    """Read `read_chunk_size` at a time, handed out in pieces that end at every MiB of
    the blob: a reader checking 1 MiB blocks never has to slice one."""
    data = os.urandom(9 * MiB + 5)
    for chunk_size, start, expected in [
        (MiB, 0, [MiB] * 9 + [5]),
        (4 * MiB, 0, [MiB] * 9 + [5]),
        (4 * MiB, 1000, [MiB - 1000] + [MiB] * 8 + [5]),
        (1000, 0, None),
    ]:
        store = LocalBlobStore(root, read_chunk_size=chunk_size)
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(data))
        chunks = await read_chunks(await store.open(blob_id, start))
        assert b"".join(chunks) == data[start:]
        if expected is not None:
            assert [len(c) for c in chunks] == expected
        ends = list(itertools.accumulate(map(len, chunks), initial=start))
        assert all(len(c) <= chunk_size for c in chunks)
        # No piece crosses a MiB boundary; with 1000-byte reads, only there is one cut.
        assert all(a // MiB == (b - 1) // MiB for a, b in itertools.pairwise(ends))
        if chunk_size == 1000:
            assert len(chunks) == len(range(0, len(data), 1000)) + 9


@pytest.mark.anyio
async def test_failed_and_cancelled_puts_remove_their_temp_file(
    store: LocalBlobStore, root: Path
) -> None:
    with pytest.raises(RuntimeError):
        await store.put(new_blob_id(), failing_after(bytes(3 * MiB), RuntimeError()))
    assert temp_files(root) == []

    writing = anyio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield bytes(3 * MiB)
        writing.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.put, new_blob_id(), stalls())
        await writing.wait()
        with anyio.fail_after(5):  # the first batch is written in the background
            while not temp_files(root):
                await anyio.sleep(0.01)
        assert len(temp_files(root)) == 1  # the file exists while the put runs
        tg.cancel_scope.cancel()
    assert temp_files(root) == []
    assert [p for p in root.rglob("*") if p.is_file()] == []


@pytest.mark.anyio
async def test_failed_directory_fsync_undoes_the_rename(
    store: LocalBlobStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    blob_id = new_blob_id()
    with pytest.raises(BlobStoreUnavailable):
        await store.put(blob_id, chunked(b"data"))
    with pytest.raises(BlobNotFound):
        await store.stat(blob_id)
    assert temp_files(root) == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("code", "error"),
    [
        (errno.ENOSPC, InsufficientStorage),
        (errno.EDQUOT, InsufficientStorage),
        (errno.EIO, BlobStoreUnavailable),
    ],
)
async def test_write_errors_are_translated_without_paths(
    store: LocalBlobStore,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    error: type[Exception],
) -> None:
    def writev(fd: int, buffers: list[bytes]) -> int:
        raise OSError(code, os.strerror(code), str(root / ".tmp" / "x"))

    monkeypatch.setattr(os, "writev", writev)
    blob_id = new_blob_id()
    with pytest.raises(error) as raised:
        await store.put(blob_id, chunked(bytes(2 * MiB)))
    assert str(root) not in str(raised.value)
    assert str(root) not in getattr(raised.value, "message", "")
    assert temp_files(root) == []
    with pytest.raises(BlobNotFound):
        await store.stat(blob_id)


@pytest.mark.anyio
async def test_read_errors_are_translated_and_close_the_file(
    store: LocalBlobStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big, small = new_blob_id(), new_blob_id()
    await store.put(big, chunked(bytes(MiB)))  # read chunk by chunk
    await store.put(small, chunked(bytes(100)))  # read whole when opened
    fds = open_fds(store.root)
    stream = await store.open(big)

    def pread(fd: int, size: int, offset: int) -> bytes:
        raise OSError(errno.EIO, "I/O error", str(root))

    monkeypatch.setattr(os, "pread", pread)
    with pytest.raises(BlobStoreUnavailable) as raised:
        await anext(stream)
    assert str(root) not in str(raised.value)
    with pytest.raises(BlobStoreUnavailable) as raised:
        await store.open(small)
    assert str(root) not in str(raised.value)
    assert open_fds(store.root) == fds


@pytest.mark.anyio
async def test_missing_root_is_unavailable(
    store: LocalBlobStore, root: Path, tmp_path: Path
) -> None:
    os.rename(root, tmp_path / "elsewhere")  # an unmounted volume, say
    with pytest.raises(BlobStoreUnavailable) as raised:
        await store.check()
    assert str(root) not in str(raised.value)
    with pytest.raises(BlobStoreUnavailable) as raised:
        await store.put(new_blob_id(), chunked(b"x"))
    assert str(root) not in str(raised.value)
    assert not root.exists()  # never silently recreated


@pytest.mark.anyio
async def test_removed_tmp_dir_is_recreated(store: LocalBlobStore, root: Path) -> None:
    os.rmdir(root / ".tmp")
    await store.check()
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"x"))
    assert await read_all(store, blob_id) == b"x"


@pytest.mark.anyio
async def test_unusable_tmp_dir_fails_check(store: LocalBlobStore, root: Path) -> None:
    os.rmdir(root / ".tmp")
    (root / ".tmp").write_bytes(b"")  # works as root too, unlike chmod
    with pytest.raises(BlobStoreUnavailable):
        await store.check()


@pytest.mark.anyio
async def test_same_id_written_concurrently_does_not_collide(store: LocalBlobStore) -> None:
    blob_id = new_blob_id()
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(store.put, blob_id, chunked(bytes(3 * MiB)))
    assert await read_all(store, blob_id) == bytes(3 * MiB)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["exhausted", "aclose", "gc", "invalid range"])
async def test_reader_releases_its_file(store: LocalBlobStore, how: str) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(bytes(3 * MiB)))
    fds = open_fds(store.root)
    if how == "invalid range":
        with pytest.raises(ValueError):
            await store.open(blob_id, 5, 4)
    else:
        stream = await store.open(blob_id)
        assert len(open_fds(store.root)) == len(fds) + 1
        if how == "exhausted":
            await read_chunks(stream)
        elif how == "aclose":
            await anext(stream)
            await stream.aclose()
        else:
            await anext(stream)
            del stream
            gc.collect()
    assert open_fds(store.root) == fds


@pytest.mark.anyio
async def test_aclose_during_a_read_waits_for_it(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(bytes(3 * MiB)))
    fds = open_fds(store.root)
    stream = await store.open(blob_id)
    entered, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        entered.set()
        release.wait(10)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    outcome: list[object] = []

    async def read() -> None:
        try:
            outcome.append(await anext(stream))
        except StopAsyncIteration as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.to_thread.run_sync(entered.wait)
        with pytest.raises(RuntimeError):
            await anext(stream)  # one reader at a time
        await stream.aclose()
        assert len(open_fds(store.root)) == len(fds) + 1  # still in use by the running pread
        release.set()
    assert isinstance(outcome[0], StopAsyncIteration)
    assert open_fds(store.root) == fds


@pytest.mark.anyio
async def test_the_next_chunk_is_read_while_the_caller_sends_this_one(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading and sending in turns left the disk idle while the socket worked: a
    cold 1 GiB GET ran at 634 MB/s, 913 with the next chunk read meanwhile."""
    store = LocalBlobStore(root, read_chunk_size=MiB)
    blob_id = new_blob_id()
    data = os.urandom(3 * MiB + 5)
    await store.put(blob_id, chunked(data))
    offsets: list[int] = []
    real_pread = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        offsets.append(offset)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    stream = await store.open(blob_id)
    first = await anext(stream)
    ahead = [MiB * (1 + n) for n in range(local_module._READ_AHEAD)]
    with anyio.fail_after(10):
        while len(offsets) < 1 + len(ahead):  # nobody asked for the next chunks yet
            await anyio.sleep(0.01)
    assert offsets[0] == 0 and sorted(offsets[1:]) == ahead
    await anyio.sleep(0.1)
    assert len(offsets) == 1 + len(ahead)  # so many chunks ahead, no more
    assert first + b"".join(await read_chunks(stream)) == data
    assert sorted(offsets) == [0, MiB, 2 * MiB, 3 * MiB]


@pytest.mark.anyio
async def test_aclose_with_a_read_ahead_in_flight_closes_the_file_after_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(root, read_chunk_size=MiB)
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(bytes(3 * MiB)))
    fds = open_fds(store.root)
    entered, release = threading.Event(), threading.Event()
    real_pread = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        if offset > 0:  # the read ahead stalls (a slow disk)
            entered.set()
            release.wait(10)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    stream = await store.open(blob_id)
    await anext(stream)
    assert await anyio.to_thread.run_sync(entered.wait, 10), "no read ahead"
    await stream.aclose()
    assert len(open_fds(store.root)) == len(fds) + 1  # the pread still uses it
    release.set()
    with anyio.fail_after(10):
        while open_fds(store.root) != fds:
            await anyio.sleep(0.01)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


@pytest.mark.anyio
async def test_abandoned_listing_releases_its_directories(root: Path) -> None:
    store = LocalBlobStore(root, list_batch_size=2)
    for _ in range(5):
        await store.put(new_blob_id(), chunked(b"x"))
    fds = open_fds(store.root)
    listing = store.list_blobs()
    assert await anext(listing)
    assert len(open_fds(store.root)) > len(fds)
    await listing.aclose()  # type: ignore[attr-defined]
    assert open_fds(store.root) == fds


@pytest.mark.anyio
async def test_list_blobs_skips_everything_else(root: Path) -> None:
    store = LocalBlobStore(root, list_batch_size=3)
    blob_ids = {new_blob_id() for _ in range(10)}
    for blob_id in blob_ids:
        await store.put(blob_id, chunked(b"x"))
    stray = new_blob_id()
    (root / ".tmp" / stray).write_bytes(b"temp")
    (root / "README").write_text("not a blob")
    (root / "zz" / "yy").mkdir(parents=True)
    (root / "zz" / "yy" / stray).write_bytes(b"wrong fan-out name")
    (root / "ab" / "cd").mkdir(parents=True, exist_ok=True)
    (root / "ab" / "cd" / stray).write_bytes(b"in the wrong directory")
    (root / "ab" / "cd" / ("abcd" + "e" * 27)).write_bytes(b"too short")
    (root / "ab" / "cd" / ("abcd" + "e" * 28)).mkdir()
    (root / "ab" / "cd" / ("abcd" + "f" * 28)).symlink_to(root / "README")
    listed = [info.blob_id async for info in store.list_blobs()]
    assert sorted(listed) == sorted(blob_ids)


@pytest.mark.anyio
async def test_sweep_incomplete_removes_only_old_temp_files(
    store: LocalBlobStore, root: Path
) -> None:
    now = time.time()
    for name, age in [("old1", 7200), ("old2", 3601), ("fresh", 10)]:
        path = root / ".tmp" / name
        path.write_bytes(b"partial")
        os.utime(path, (now - age, now - age))
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"kept"))
    assert await store.sweep_incomplete(now - 3600) == 2
    assert temp_files(root) == ["fresh"]
    assert await store.sweep_incomplete(now - 3600) == 0
    assert await read_all(store, blob_id) == b"kept"


@pytest.mark.anyio
async def test_capacity_is_the_disk_usage(store: LocalBlobStore, root: Path) -> None:
    capacity = await store.capacity()
    assert capacity.total_bytes == os.statvfs(root).f_blocks * os.statvfs(root).f_frsize
    assert capacity.free_bytes is not None and 0 < capacity.free_bytes <= capacity.total_bytes


@pytest.mark.anyio
@pytest.mark.timeout(300)
async def test_put_memory_is_bounded(store: LocalBlobStore) -> None:
    size, chunk = 256 * MiB, 64 * 1024

    async def generated() -> AsyncIterator[bytes]:
        for _ in range(size // chunk):
            yield bytes(chunk)  # a fresh object each time, as a network read would be

    blob_id = new_blob_id()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        assert await store.put(blob_id, generated()) == size
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak - baseline < 16 * MiB
    assert (await store.stat(blob_id)).size == size


@pytest.mark.anyio
async def test_parts_in_place_are_renamed_not_copied(store: LocalBlobStore, root: Path) -> None:
    blob_id = new_blob_id()
    upload = await store.begin_multipart(blob_id)
    step = 5 * MiB
    datas = [os.urandom(step), os.urandom(step), b"tail"]
    parts = [
        await store.put_part(
            blob_id, upload, n, chunked(data), size=len(data), offset=(n - 1) * step
        )
        for n, data in enumerate(datas, start=1)
    ]
    assembly = root / ".parts" / blob_id / "assembly"
    inode = assembly.stat().st_ino
    assembled = await store.complete_multipart(blob_id, upload, parts)
    assert assembled.parts_consumed  # the parts became the blob
    assert (root / blob_id[:2] / blob_id[2:4] / blob_id).stat().st_ino == inode
    assert await read_all(store, blob_id) == b"".join(datas)
    await store.abort_multipart(blob_id, upload)
    assert os.listdir(root / ".parts") == []


@pytest.mark.anyio
async def test_a_blob_assembled_in_place_is_new_to_the_orphan_sweep(
    store: LocalBlobStore, root: Path
) -> None:
    # The parts were written long ago; the blob only exists from its completion on, and
    # until the index commits it, only its age keeps the orphan sweep (which spares
    # blobs younger than its grace) away from it.
    blob_id = new_blob_id()
    upload = await store.begin_multipart(blob_id)
    part = await store.put_part(blob_id, upload, 1, chunked(b"old"), size=3, offset=0)
    day_ago = time.time() - 86400
    os.utime(root / ".parts" / blob_id / "assembly", (day_ago, day_ago))
    started = time.time()
    assembled = await store.complete_multipart(blob_id, upload, [part])
    assert assembled.parts_consumed
    [info] = [info async for info in store.list_blobs()]
    assert info.blob_id == blob_id
    assert info.modified >= started - 1


@pytest.mark.anyio
async def test_a_part_placed_during_an_in_place_completion_stays_out_of_the_blob(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Part 3 (not in the completion) starts writing into the assembly file while the
    # completion hashes parts 1 and 2 there: its bytes must not end up in the blob.
    blob_id = new_blob_id()
    upload = await store.begin_multipart(blob_id)
    step = 5 * MiB
    datas = {n: os.urandom(step) for n in (1, 2, 3)}

    async def put(number: int) -> Any:
        data = datas[number]
        return await store.put_part(
            blob_id, upload, number, chunked(data), size=len(data), offset=(number - 1) * step
        )

    parts = [await put(1), await put(2)]
    store._prefixes.clear()  # as in another process: the completion hashes everything
    hashing = local_module.concatenate

    def meanwhile_part_three(*args: Any, **kwargs: Any) -> Any:
        anyio.from_thread.run(put, 3)
        return hashing(*args, **kwargs)

    monkeypatch.setattr(local_module, "concatenate", meanwhile_part_three)
    assembled = await store.complete_multipart(blob_id, upload, parts)
    whole = datas[1] + datas[2]
    assert assembled.size == len(whole)
    assert (await store.stat(blob_id)).size == len(whole)
    assert await read_all(store, blob_id) == whole
