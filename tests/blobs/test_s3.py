"""The S3 backend against a real engine (SeaweedFS): the contract, then what only S3 has."""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from tests.blobs.contract import (
    BlobStoreContract,
    MultipartContract,
    chunked,
    failing_after,
    random_bytes,
    read_all,
    read_chunks,
)
from tests.s3.fixtures import SeaweedFS, multipart_uploads, object_keys
from tfstorage.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, new_blob_id
from tfstorage.blobs.base import StoredPart
from tfstorage.blobs.s3 import S3BlobStore, S3Config
from tfstorage.errors import InvalidPart
from tfstorage.s3api import checksums
from tfstorage.s3api.errors import XAmzContentSHA256Mismatch
from tfstorage.service.hashing import HashingStream

MiB = 1024 * 1024


def make_store(
    engine: SeaweedFS, prefix: str, *, bucket: str | None = None, **options: object
) -> S3BlobStore:
    return S3BlobStore(
        S3Config(
            endpoint_url=engine.endpoint_url,
            bucket=bucket or engine.bucket,
            access_key=engine.access_key,
            secret_key=engine.secret_key,
            region=engine.region,
            prefix=prefix,
            **options,  # type: ignore[arg-type]
        )
    )


class TestS3BlobStore(BlobStoreContract, MultipartContract):
    @pytest.fixture
    async def store(self, seaweedfs: SeaweedFS, s3_prefix: str) -> AsyncIterator[BlobStore]:
        store = make_store(seaweedfs, s3_prefix, part_size=5 * MiB)
        yield store
        await store.close()


@pytest.fixture
async def store(seaweedfs: SeaweedFS, s3_prefix: str) -> AsyncIterator[S3BlobStore]:
    store = make_store(seaweedfs, s3_prefix, part_size=5 * MiB)
    yield store
    await store.close()


@pytest.mark.anyio
async def test_object_names(store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"named"))
    assert object_keys(seaweedfs, s3_prefix) == [f"{s3_prefix}blobs/{blob_id[:2]}/{blob_id}"]
    for bad in ("../" + "a" * 29, "A" * 32, "a" * 31, "a/" * 16):
        with pytest.raises(ValueError):
            await store.put(bad, chunked(b"x"))
        with pytest.raises(ValueError):
            await store.open(bad)


@pytest.mark.anyio
async def test_unknown_length_goes_up_in_parts(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    data = random_bytes(12 * MiB + 17, seed=12)
    blob_id = new_blob_id()
    assert await store.put(blob_id, chunked(data, 256 * 1024)) == len(data)
    key = f"{s3_prefix}blobs/{blob_id[:2]}/{blob_id}"
    head = seaweedfs.client().head_object(Bucket=seaweedfs.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB parts
    assert await read_all(store, blob_id) == data
    assert (
        await read_all(store, blob_id, 5 * MiB - 3, 10 * MiB + 3)
        == data[5 * MiB - 3 : 10 * MiB + 3]
    )
    assert multipart_uploads(seaweedfs, s3_prefix) == []


@pytest.mark.anyio
async def test_small_blob_is_one_put(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(bytes(MiB), 1000))
    key = f"{s3_prefix}blobs/{blob_id[:2]}/{blob_id}"
    head = seaweedfs.client().head_object(Bucket=seaweedfs.bucket, Key=key)
    assert "-" not in head["ETag"]


@pytest.mark.anyio
@pytest.mark.parametrize("size_before_failure", [6 * MiB, 11 * MiB])
async def test_failed_upload_leaves_no_multipart_upload(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str, size_before_failure: int
) -> None:
    error = RuntimeError("client went away")
    with pytest.raises(RuntimeError) as raised:
        await store.put(new_blob_id(), failing_after(bytes(size_before_failure), error))
    assert raised.value is error
    # Checked at once: the abort happened before put() raised, not in the background.
    assert multipart_uploads(seaweedfs, s3_prefix) == []
    assert object_keys(seaweedfs, s3_prefix) == []


@pytest.mark.anyio
async def test_cancelled_upload_leaves_no_multipart_upload(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    streaming = anyio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        for _ in range(12):
            yield bytes(MiB)
        streaming.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.put, new_blob_id(), stalls())
        await streaming.wait()
        await anyio.sleep(0.5)  # let parts reach the engine
        assert multipart_uploads(seaweedfs, s3_prefix) != []
        tg.cancel_scope.cancel()
    assert multipart_uploads(seaweedfs, s3_prefix) == []
    assert object_keys(seaweedfs, s3_prefix) == []


@pytest.mark.anyio
async def test_sweep_aborts_dangling_uploads(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    client = seaweedfs.client()
    dangling = f"{s3_prefix}blobs/ab/{'ab' * 16}"
    upload = client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=dangling)
    client.upload_part(
        Bucket=seaweedfs.bucket, Key=dangling, UploadId=upload["UploadId"], PartNumber=1, Body=b"x"
    )
    outside = f"other-{s3_prefix}blobs/ab/{'ab' * 16}"  # another store's: not ours to sweep
    other = client.create_multipart_upload(Bucket=seaweedfs.bucket, Key=outside)
    try:
        assert await store.sweep_incomplete(time.time() - 3600) == 0  # too recent
        assert multipart_uploads(seaweedfs, s3_prefix) == [dangling]
        assert await store.sweep_incomplete(time.time() + 5) == 1
        assert multipart_uploads(seaweedfs, s3_prefix) == []
        assert await store.sweep_incomplete(time.time() + 5) == 0
        assert multipart_uploads(seaweedfs, f"other-{s3_prefix}") == [outside]
    finally:
        client.abort_multipart_upload(
            Bucket=seaweedfs.bucket, Key=outside, UploadId=other["UploadId"]
        )


@pytest.mark.anyio
async def test_check_creates_a_missing_bucket(
    seaweedfs: SeaweedFS, s3_bucket_factory: Callable[[], str]
) -> None:
    bucket = s3_bucket_factory()
    store = make_store(seaweedfs, "", bucket=bucket)
    try:
        with pytest.raises(BlobStoreUnavailable):
            await store.put(new_blob_id(), chunked(b"no bucket yet"))
        await store.check()
        seaweedfs.client().head_bucket(Bucket=bucket)
        blob_id = new_blob_id()
        await store.put(blob_id, chunked(b"now"))
        assert await read_all(store, blob_id) == b"now"
        await store.check()
        await store.ensure_bucket()  # idempotent
    finally:
        await store.close()


@pytest.mark.anyio
async def test_missing_bucket_after_start_is_reported(
    seaweedfs: SeaweedFS, s3_bucket_factory: Callable[[], str]
) -> None:
    bucket = s3_bucket_factory()
    store = make_store(seaweedfs, "", bucket=bucket)
    try:
        await store.check()
        seaweedfs.client().delete_bucket(Bucket=bucket)
        with pytest.raises(BlobStoreUnavailable, match="disappeared"):
            await store.check()
    finally:
        await store.close()


@pytest.mark.anyio
async def test_wrong_credentials_are_unavailable_without_leaking_them(
    seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    store = S3BlobStore(
        S3Config(
            endpoint_url=seaweedfs.endpoint_url,
            bucket=seaweedfs.bucket,
            access_key=seaweedfs.access_key,
            secret_key="not-the-secret",
            prefix=s3_prefix,
        )
    )
    try:
        for attempt in (
            store.check(),
            store.put(new_blob_id(), chunked(b"x")),
            store.stat(new_blob_id()),
        ):
            with pytest.raises(BlobStoreUnavailable) as raised:
                await attempt
            message = raised.value.message
            assert "access denied" in message
            assert "not-the-secret" not in message and "127.0.0.1" not in message
    finally:
        await store.close()


@pytest.mark.anyio
async def test_chunks_are_bounded_and_end_at_each_mib_of_the_blob(store: S3BlobStore) -> None:
    """Whatever the engine's own chunks, a read hands out pieces up to the next MiB of
    the blob: a block checker then takes each piece whole."""
    data = random_bytes(7 * MiB + 3, seed=3)
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(data, 3 * MiB))
    for start, end in ((1, None), (0, None), (MiB - 5, 5 * MiB + 7)):
        chunks = await read_chunks(await store.open(blob_id, start, end))
        assert b"".join(chunks) == data[start:end]
        ends = list(itertools.accumulate(map(len, chunks), initial=start))
        assert all(0 < len(chunk) <= MiB for chunk in chunks)
        assert all(b % MiB == 0 for b in ends[1:-1])  # every piece but the last ends at a MiB


@pytest.mark.anyio
async def test_capacity_is_unknown(store: S3BlobStore) -> None:
    capacity = await store.capacity()
    assert (capacity.total_bytes, capacity.free_bytes) == (None, None)


@pytest.mark.anyio
async def test_missing_blob_after_delete_by_someone_else(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"x"))
    seaweedfs.client().delete_object(
        Bucket=seaweedfs.bucket, Key=f"{s3_prefix}blobs/{blob_id[:2]}/{blob_id}"
    )
    with pytest.raises(BlobNotFound):
        await store.open(blob_id, 0, 1)


@pytest.mark.anyio
async def test_describe_names_the_engine_not_the_secret(
    store: S3BlobStore, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    assert store.describe() == {
        "type": "s3",
        "endpoint": seaweedfs.endpoint_url,
        "bucket": seaweedfs.bucket,
        "prefix": s3_prefix,
    }
    assert seaweedfs.secret_key not in str(store.describe())


@pytest.mark.anyio
@pytest.mark.parametrize("size", [100_000, MiB + 12_345, 2 * MiB])
async def test_a_part_that_fails_its_checks_never_reaches_the_engine(
    store: S3BlobStore, size: int
) -> None:
    """The write path runs a signed part's checks at its end, on its own digests: the
    engine, which gets the bytes as they come, must not get a whole part before them
    (it would keep it, under that part number, whatever the index says)."""
    blob_id = new_blob_id()
    upload = await store.begin_multipart(blob_id)
    bad = random_bytes(size, seed=7)
    body = checksums.VerifiedBody(chunked(bad), signed_sha256="0" * 64, expected=[])
    stream = HashingStream(body, limit=4 * MiB, expected_size=size)
    with pytest.raises(XAmzContentSHA256Mismatch):
        await store.put_part(blob_id, upload, 1, stream, size=size)
    # Completing with that part's ETag: the engine has no such part.
    etag = hashlib.md5(bad).hexdigest()
    with pytest.raises(InvalidPart):
        await store.complete_multipart(blob_id, upload, [StoredPart(1, size, etag)])
    await store.abort_multipart(blob_id, upload)
