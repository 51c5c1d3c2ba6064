"""The contract every `BlobStore` backend honours.

A backend's test module subclasses `BlobStoreContract` and provides a `store` fixture
returning a fresh, empty store (an S3 backend: its own bucket or prefix). Nothing here
assumes a file system.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import AsyncIterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfstorage.blobs import BlobInfo, BlobNotFound, BlobStore, Capacity, StoredPart, new_blob_id
from tfstorage.blobs.base import MAX_READ_CHUNK, DigestMismatch
from tfstorage.domain.blocks import block_checksums_of
from tfstorage.errors import InvalidPart

MiB = 1024 * 1024


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunked(data: bytes, chunk_size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), chunk_size):
        yield data[offset : offset + chunk_size]


async def failing_after(data: bytes, error: BaseException) -> AsyncIterator[bytes]:
    async for chunk in chunked(data):
        yield chunk
    raise error


async def read_chunks(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


async def read_all(store: BlobStore, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(await read_chunks(await store.open(blob_id, start, end)))


async def listed(store: BlobStore) -> dict[str, BlobInfo]:
    return {info.blob_id: info async for info in store.list_blobs()}


class BlobStoreContract:
    @pytest.mark.anyio
    async def test_is_a_blob_store(self, store: BlobStore) -> None:
        assert isinstance(store, BlobStore)
        assert isinstance(store.name, str) and store.name

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "size", [0, 1, MiB - 1, MiB, MiB + 1, 3 * MiB + 12345], ids=lambda s: f"{s}B"
    )
    @pytest.mark.parametrize("chunk_size", [1000, 64 * 1024, 4 * MiB])
    async def test_round_trip(self, store: BlobStore, size: int, chunk_size: int) -> None:
        data = random_bytes(size, seed=size)
        blob_id = new_blob_id()
        before = time.time()
        assert await store.put(blob_id, chunked(data, chunk_size)) == size
        info = await store.stat(blob_id)
        assert (info.blob_id, info.size) == (blob_id, size)
        assert before - 5 <= info.modified <= time.time() + 5  # clocks of remote servers
        chunks = await read_chunks(await store.open(blob_id))
        assert b"".join(chunks) == data
        assert all(0 < len(chunk) <= MAX_READ_CHUNK for chunk in chunks)

    @pytest.mark.anyio
    async def test_put_accepts_empty_chunks(self, store: BlobStore) -> None:
        async def gappy() -> AsyncIterator[bytes]:
            for part in (b"", b"ab", b"", b"c", b""):
                yield part

        blob_id = new_blob_id()
        assert await store.put(blob_id, gappy()) == 3
        assert await read_all(store, blob_id) == b"abc"

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (0, None),
            (1, None),
            (MiB, None),
            (MiB + 1, None),
            (2 * MiB + 10, None),  # start == size
            (0, 1),
            (10, 20),
            (MiB - 5, MiB + 5),  # across a chunk boundary
            (5, 2 * MiB + 10),  # end == size
            (0, 0),
            (MiB, MiB),
            (2 * MiB + 10, 2 * MiB + 10),
        ],
    )
    async def test_ranges(self, store: BlobStore, start: int, end: int | None) -> None:
        data = random_bytes(2 * MiB + 10)
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(data))
        chunks = await read_chunks(await store.open(blob_id, start, end))
        assert b"".join(chunks) == data[start:end]
        assert all(chunks)

    @pytest.mark.anyio
    @pytest.mark.parametrize(("start", "end"), [(-1, None), (101, None), (0, 101), (50, 49)])
    async def test_invalid_range_is_refused(
        self, store: BlobStore, start: int, end: int | None
    ) -> None:
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(bytes(100)))
        with pytest.raises(ValueError):
            await store.open(blob_id, start, end)
        assert await read_all(store, blob_id) == bytes(100)  # nothing leaked or broken

    @pytest.mark.anyio
    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(start=st.integers(0, 2 * MiB + 3), length=st.integers(0, 2 * MiB + 3))
    async def test_any_valid_range(self, store: BlobStore, start: int, length: int) -> None:
        # The same store serves every example: store the blob once, under a fixed id.
        data = random_bytes(2 * MiB + 3, seed=7)
        blob_id = "ab" * 16
        try:
            await store.stat(blob_id)
        except BlobNotFound:
            await store.put(blob_id, chunked(data))
        start = min(start, len(data))
        end = min(start + length, len(data))
        assert await read_all(store, blob_id, start, end) == data[start:end]

    @pytest.mark.anyio
    async def test_missing_blob(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        with pytest.raises(BlobNotFound) as raised:
            await store.open(blob_id)
        assert raised.value.blob_id == blob_id
        assert isinstance(raised.value, FileNotFoundError)
        with pytest.raises(BlobNotFound):
            await store.open(blob_id, 0, 0)
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)

    @pytest.mark.anyio
    async def test_delete(self, store: BlobStore) -> None:
        kept, gone = new_blob_id(), new_blob_id()
        await store.put(kept, chunked(b"kept"))
        await store.put(gone, chunked(b"gone"))
        await store.delete(gone)
        with pytest.raises(BlobNotFound):
            await store.stat(gone)
        with pytest.raises(BlobNotFound):
            await store.open(gone)
        await store.delete(gone)  # idempotent
        await store.delete(new_blob_id())  # never existed
        assert await read_all(store, kept) == b"kept"

    @pytest.mark.anyio
    @pytest.mark.parametrize("size_before_failure", [0, 10, 3 * MiB])
    async def test_failing_iterator_leaves_nothing(
        self, store: BlobStore, size_before_failure: int
    ) -> None:
        blob_id = new_blob_id()
        error = RuntimeError("client went away")
        with pytest.raises(RuntimeError) as raised:
            await store.put(blob_id, failing_after(bytes(size_before_failure), error))
        assert raised.value is error
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)
        with pytest.raises(BlobNotFound):
            await store.open(blob_id)
        assert await listed(store) == {}

    @pytest.mark.anyio
    async def test_cancelled_put_leaves_nothing(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        streaming = anyio.Event()

        async def stalls() -> AsyncIterator[bytes]:
            yield bytes(2 * MiB)
            streaming.set()
            await anyio.sleep_forever()
            yield b""  # pragma: no cover

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.put, blob_id, stalls())
            await streaming.wait()
            tg.cancel_scope.cancel()
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)
        assert await listed(store) == {}

    @pytest.mark.anyio
    async def test_put_is_invisible_until_complete(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        halfway, resume = anyio.Event(), anyio.Event()

        async def paused() -> AsyncIterator[bytes]:
            yield bytes(3 * MiB)
            halfway.set()
            await resume.wait()
            yield b"end"

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.put, blob_id, paused())
            await halfway.wait()
            with pytest.raises(BlobNotFound):
                await store.stat(blob_id)
            with pytest.raises(BlobNotFound):
                await store.open(blob_id)
            assert blob_id not in await listed(store)
            resume.set()
        assert (await store.stat(blob_id)).size == 3 * MiB + 3

    @pytest.mark.anyio
    async def test_list_blobs_sees_exactly_what_is_stored(self, store: BlobStore) -> None:
        assert await listed(store) == {}
        sizes = {new_blob_id(): size for size in (0, 1, 1000, MiB + 1, 7)}
        for blob_id, size in sizes.items():
            await store.put(blob_id, chunked(bytes(size)))
        deleted = next(iter(sizes))
        await store.delete(deleted)
        del sizes[deleted]
        found = await listed(store)
        assert {blob_id: info.size for blob_id, info in found.items()} == sizes
        for info in found.values():
            assert info == await store.stat(info.blob_id)

    @pytest.mark.anyio
    async def test_concurrent_puts(self, store: BlobStore) -> None:
        blobs = {new_blob_id(): random_bytes(100_000 + n * 7919, seed=n) for n in range(20)}

        async def put(blob_id: str) -> None:
            assert await store.put(blob_id, chunked(blobs[blob_id], 8192)) == len(blobs[blob_id])

        async with anyio.create_task_group() as tg:
            for blob_id in blobs:
                tg.start_soon(put, blob_id)
        for blob_id, data in blobs.items():
            assert await read_all(store, blob_id) == data
        assert set(await listed(store)) == set(blobs)

    @pytest.mark.anyio
    async def test_concurrent_readers(self, store: BlobStore) -> None:
        data = random_bytes(3 * MiB + 1)
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(data))
        results: list[bytes] = []

        async def read() -> None:
            results.append(await read_all(store, blob_id))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(read)
        assert results == [data] * 10

    @pytest.mark.anyio
    @pytest.mark.parametrize("read_first", [False, True])
    async def test_reader_opened_before_delete_gets_every_byte(
        self, store: BlobStore, read_first: bool
    ) -> None:
        data = random_bytes(3 * MiB + 5)
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(data))
        stream = await store.open(blob_id)
        head = [await anext(stream)] if read_first else []
        await store.delete(blob_id)
        with pytest.raises(BlobNotFound):
            await store.open(blob_id)
        assert b"".join(head + await read_chunks(stream)) == data

    @pytest.mark.anyio
    async def test_aclose_ends_the_stream(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(bytes(3 * MiB)))
        stream = await store.open(blob_id)
        assert await anext(stream)
        await stream.aclose()
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert await read_all(store, blob_id) == bytes(3 * MiB)

    @pytest.mark.anyio
    async def test_sweep_incomplete_keeps_stored_blobs(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(b"safe"))
        with pytest.raises(RuntimeError):
            await store.put(new_blob_id(), failing_after(bytes(MiB), RuntimeError()))
        assert await store.sweep_incomplete(time.time() + 3600) >= 0
        assert await store.sweep_incomplete(time.time() + 3600) == 0
        assert set(await listed(store)) == {blob_id}
        assert await read_all(store, blob_id) == b"safe"

    @pytest.mark.anyio
    async def test_capacity(self, store: BlobStore) -> None:
        capacity = await store.capacity()
        assert isinstance(capacity, Capacity)
        for value in (capacity.total_bytes, capacity.free_bytes):
            assert value is None or (isinstance(value, int) and value >= 0)
        if capacity.total_bytes is not None and capacity.free_bytes is not None:
            assert capacity.free_bytes <= capacity.total_bytes

    @pytest.mark.anyio
    async def test_check(self, store: BlobStore) -> None:
        await store.check()
        await store.check()


async def parts_of(
    store: BlobStore, blob_id: str, upload: str, datas: dict[int, bytes]
) -> list[StoredPart]:
    """Store `datas` as parts (in the dict's order), returned sorted by number."""
    stored = [
        await store.put_part(blob_id, upload, number, chunked(data), size=len(data))
        for number, data in datas.items()
    ]
    return sorted(stored, key=lambda part: part.part_number)


class MultipartContract:
    """Multipart blobs (resumable uploads): parts in any order, replaced, assembled."""

    @pytest.mark.anyio
    async def test_parts_out_of_order_assemble_with_real_digests(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        datas = {n: random_bytes(5 * MiB + n, seed=n) for n in (3, 1, 2)}
        datas[3] = b"tail"
        parts = await parts_of(store, blob_id, upload, datas)
        assert [(p.part_number, p.size) for p in parts] == [
            (1, 5 * MiB + 1),
            (2, 5 * MiB + 2),
            (3, 4),
        ]
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)  # nothing visible before completion
        whole = datas[1] + datas[2] + datas[3]
        assembled = await store.complete_multipart(blob_id, upload, parts, block_size=64 * 1024)
        assert assembled.size == len(whole)
        assert assembled.md5 == hashlib.md5(whole).hexdigest()
        assert assembled.sha256 == hashlib.sha256(whole).hexdigest()
        # The block checksums, hashed in the same pass (blocks straddle the parts).
        assert assembled.blocks == block_checksums_of(whole, 64 * 1024)
        assert await read_all(store, blob_id) == whole
        await store.abort_multipart(blob_id, upload)
        await store.abort_multipart(blob_id, upload)  # idempotent
        assert await read_all(store, blob_id) == whole  # the blob is not a part

    @pytest.mark.anyio
    async def test_parallel_parts_and_a_replaced_part(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        datas = {n: random_bytes(5 * MiB, seed=10 + n) for n in range(1, 5)}
        stored: dict[int, StoredPart] = {}

        async def put(number: int, data: bytes) -> None:
            part = await store.put_part(blob_id, upload, number, chunked(data), size=len(data))
            stored[number] = part

        async with anyio.create_task_group() as tg:
            for number, data in datas.items():
                tg.start_soon(put, number, data)
        # A part sent again (a retry after a lost answer) replaces the first one.
        datas[2] = random_bytes(5 * MiB + 7, seed=99)
        await put(2, datas[2])
        parts = [stored[n] for n in sorted(stored)]
        assembled = await store.complete_multipart(blob_id, upload, parts)
        whole = b"".join(datas[n] for n in sorted(datas))
        assert assembled.sha256 == hashlib.sha256(whole).hexdigest()
        assert await read_all(store, blob_id) == whole

    @pytest.mark.anyio
    async def test_a_single_part_and_an_empty_one(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        parts = await parts_of(store, blob_id, upload, {1: b""})
        assembled = await store.complete_multipart(blob_id, upload, parts)
        assert (assembled.size, assembled.sha256) == (0, hashlib.sha256(b"").hexdigest())
        assert await read_all(store, blob_id) == b""

    @pytest.mark.anyio
    async def test_failing_part_leaves_the_earlier_one(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        first = await parts_of(store, blob_id, upload, {1: b"first"})
        with pytest.raises(RuntimeError):
            await store.put_part(
                blob_id, upload, 1, failing_after(bytes(MiB), RuntimeError()), size=MiB + 1
            )
        await store.complete_multipart(blob_id, upload, first)
        assert await read_all(store, blob_id) == b"first"

    @pytest.mark.anyio
    async def test_abort_removes_the_parts(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        parts = await parts_of(store, blob_id, upload, {1: bytes(1000)})
        await store.abort_multipart(blob_id, upload)
        with pytest.raises(InvalidPart):
            await store.complete_multipart(blob_id, upload, parts)
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)
        assert await listed(store) == {}

    @pytest.mark.anyio
    async def test_sweep_spares_kept_uploads(self, store: BlobStore) -> None:
        kept_id, dropped_id = new_blob_id(), new_blob_id()
        kept = await store.begin_multipart(kept_id)
        dropped = await store.begin_multipart(dropped_id)
        kept_parts = await parts_of(store, kept_id, kept, {1: b"kept"})
        dropped_parts = await parts_of(store, dropped_id, dropped, {1: b"gone"})
        assert await store.sweep_incomplete(time.time() - 3600, keep={kept}) == 0  # too young
        assert await store.sweep_incomplete(time.time() + 3600, keep={kept}) >= 1
        with pytest.raises(InvalidPart):
            await store.complete_multipart(dropped_id, dropped, dropped_parts)
        await store.complete_multipart(kept_id, kept, kept_parts)
        assert await read_all(store, kept_id) == b"kept"

    @pytest.mark.anyio
    async def test_parts_sent_with_their_offsets(self, store: BlobStore) -> None:
        # Whether or not the store writes them in place, the blob is the same.
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        step = 5 * MiB
        datas = {n: random_bytes(step, seed=30 + n) for n in (1, 2, 3)}
        datas[4] = random_bytes(1234, seed=34)
        stored: dict[int, StoredPart] = {}

        async def put(number: int, data: bytes) -> None:
            stored[number] = await store.put_part(
                blob_id, upload, number, chunked(data), size=len(data), offset=(number - 1) * step
            )

        async with anyio.create_task_group() as tg:
            for number in (3, 1, 4, 2):
                tg.start_soon(put, number, datas[number])
        whole = b"".join(datas[n] for n in (1, 2, 3, 4))
        parts = [stored[n] for n in (1, 2, 3, 4)]
        with pytest.raises(DigestMismatch) as refused:
            await store.complete_multipart(
                blob_id, upload, parts, expected_sha256=hashlib.sha256(b"other").hexdigest()
            )
        with pytest.raises(BlobNotFound):
            await store.stat(blob_id)  # nothing visible
        if refused.value.parts_consumed:
            await store.abort_multipart(blob_id, upload)
            upload = await store.begin_multipart(blob_id)
            for number in (1, 2, 3, 4):
                await put(number, datas[number])
            parts = [stored[n] for n in (1, 2, 3, 4)]
        assembled = await store.complete_multipart(
            blob_id, upload, parts, expected_sha256=hashlib.sha256(whole).hexdigest()
        )
        assert (assembled.size, assembled.md5) == (len(whole), hashlib.md5(whole).hexdigest())
        assert assembled.blocks == block_checksums_of(whole)  # hashed ahead, or at completion
        assert await read_all(store, blob_id) == whole

    @pytest.mark.anyio
    async def test_placed_parts_replaced_skipped_or_cut_off(self, store: BlobStore) -> None:
        blob_id = new_blob_id()
        upload = await store.begin_multipart(blob_id)
        step = 5 * MiB
        datas = {n: random_bytes(step, seed=40 + n) for n in (1, 2, 3)}

        async def put(number: int, data: bytes) -> StoredPart:
            return await store.put_part(
                blob_id, upload, number, chunked(data), size=len(data), offset=(number - 1) * step
            )

        # The first copy of part 2 is cut off mid-way: its place holds half a part.
        with pytest.raises(RuntimeError):
            await store.put_part(
                blob_id,
                upload,
                2,
                failing_after(datas[2][: 2 * MiB], RuntimeError()),
                size=step,
                offset=step,
            )
        one, two, three = await put(1, datas[1]), await put(2, datas[2]), await put(3, datas[3])
        replaced = random_bytes(step, seed=49)
        one_again = await put(1, replaced)  # a retry: replaces part 1
        parts = [one_again, two, three]
        whole = replaced + datas[2] + datas[3]
        assembled = await store.complete_multipart(blob_id, upload, parts)
        assert assembled.sha256 == hashlib.sha256(whole).hexdigest()
        assert await read_all(store, blob_id) == whole
        assert one.part_number == 1

        # Another blob: part 2 left out, so parts 1 and 3 are not where they would be.
        other_id = new_blob_id()
        upload = await store.begin_multipart(other_id)
        blob_id = other_id
        one, two, three = await put(1, datas[1]), await put(2, datas[2]), await put(3, b"end")
        assembled = await store.complete_multipart(other_id, upload, [one, three])
        assert assembled.sha256 == hashlib.sha256(datas[1] + b"end").hexdigest()
        assert await read_all(store, other_id) == datas[1] + b"end"
