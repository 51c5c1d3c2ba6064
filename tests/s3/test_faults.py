"""The S3 backend when the engine misbehaves: down, slow, failing, cutting, corrupting.

Faults come from `FaultProxy` in front of the real SeaweedFS. Time bounds here are
behavioural (the store gives up instead of hanging), generous, never benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.blobs.contract import chunked, random_bytes, read_all
from tests.s3.fixtures import SeaweedFS, free_ports, multipart_uploads, object_keys
from tests.s3.proxy import FaultProxy
from tfstorage.blobs import BlobNotFound, BlobStoreUnavailable, new_blob_id
from tfstorage.blobs.s3 import S3BlobStore, S3Config

MiB = 1024 * 1024
TIMEOUT = 1.0
RETRIES = 2
# What "fails fast" means for these settings: every try timing out, plus slack.
BOUND = TIMEOUT * (RETRIES + 1) + 5


def make_store(engine: SeaweedFS, endpoint_url: str, prefix: str) -> S3BlobStore:
    return S3BlobStore(
        S3Config(
            endpoint_url=endpoint_url,
            bucket=engine.bucket,
            access_key=engine.access_key,
            secret_key=engine.secret_key,
            region=engine.region,
            prefix=prefix,
            part_size=5 * MiB,
            timeout_seconds=TIMEOUT,
            max_retries=RETRIES,
        )
    )


@pytest.fixture
async def store(
    seaweedfs: SeaweedFS, fault_proxy: FaultProxy, s3_prefix: str
) -> AsyncIterator[S3BlobStore]:
    store = make_store(seaweedfs, fault_proxy.endpoint_url, s3_prefix)
    yield store
    await store.close()


async def unavailable_within(bound: float, attempt: Awaitable[Any]) -> BlobStoreUnavailable:
    start = time.monotonic()
    with pytest.raises(BlobStoreUnavailable) as raised:
        await attempt
    assert time.monotonic() - start < bound
    message = raised.value.message
    assert "127.0.0.1" not in message and "http" not in message  # no endpoint, no URL
    assert raised.value.status == 503 and "Retry-After" in raised.value.headers
    return raised.value


def every_operation(store: S3BlobStore, blob_id: str) -> list[Callable[[], Awaitable[Any]]]:
    return [
        lambda: store.put(new_blob_id(), chunked(b"small")),
        lambda: store.put(new_blob_id(), chunked(bytes(6 * MiB))),  # multipart
        lambda: store.open(blob_id),
        lambda: store.open(blob_id, 1, 3),
        lambda: store.stat(blob_id),
        lambda: store.delete(blob_id),
        lambda: store.check(),
        lambda: store.sweep_incomplete(time.time()),
    ]


@pytest.mark.anyio
async def test_engine_refusing_then_back(store: S3BlobStore, fault_proxy: FaultProxy) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"before the outage"))
    fault_proxy.set("refuse")
    for operation in every_operation(store, blob_id):
        await unavailable_within(BOUND, operation())
    fault_proxy.set("pass")
    # The same store, not rebuilt: pooled connections that died are replaced.
    await store.check()
    assert await read_all(store, blob_id) == b"before the outage"
    other = new_blob_id()
    await store.put(other, chunked(bytes(6 * MiB)))
    assert (await store.stat(other)).size == 6 * MiB


@pytest.mark.anyio
async def test_nothing_listening(seaweedfs: SeaweedFS, s3_prefix: str) -> None:
    (port,) = free_ports(1)
    store = make_store(seaweedfs, f"http://127.0.0.1:{port}", s3_prefix)
    try:
        for operation in every_operation(store, new_blob_id()):
            error = await unavailable_within(5.0, operation())  # refused: no waiting at all
            assert "connect" in error.message
    finally:
        await store.close()


@pytest.mark.anyio
async def test_slow_engine_times_out(store: S3BlobStore, fault_proxy: FaultProxy) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"x" * 100))
    fault_proxy.set("delay", seconds=60)
    await unavailable_within(BOUND, store.stat(blob_id))
    await unavailable_within(BOUND, store.open(blob_id))
    await unavailable_within(BOUND, store.check())
    await unavailable_within(BOUND, store.put(new_blob_id(), chunked(b"small")))
    fault_proxy.set("pass")
    assert await read_all(store, blob_id) == b"x" * 100


@pytest.mark.anyio
async def test_503_is_retried_then_unavailable(store: S3BlobStore, fault_proxy: FaultProxy) -> None:
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(b"y"))
    fault_proxy.set("status_503")
    error = await unavailable_within(BOUND, store.stat(blob_id))
    assert "503" in error.message
    # Retried, and bounded (a first try may go to a pooled connection the switch cut).
    assert 2 <= fault_proxy.answered_503 <= RETRIES + 1
    await unavailable_within(BOUND, store.open(blob_id))
    await unavailable_within(BOUND, store.put(new_blob_id(), chunked(b"small")))
    fault_proxy.set("pass")
    assert await read_all(store, blob_id) == b"y"


@pytest.mark.anyio
async def test_upload_cut_by_the_engine_leaves_nothing_after_sweep(
    store: S3BlobStore, fault_proxy: FaultProxy, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    blob_id = new_blob_id()
    fault_proxy.set("drop_request", after=MiB)  # every connection dies 1 MiB into a request
    with pytest.raises(BlobStoreUnavailable):
        await store.put(blob_id, chunked(random_bytes(12 * MiB)))
    fault_proxy.set("pass")
    await store.sweep_incomplete(time.time() + 5)
    assert multipart_uploads(seaweedfs, s3_prefix) == []
    assert object_keys(seaweedfs, s3_prefix) == []
    with pytest.raises(BlobNotFound):
        await store.stat(blob_id)


@pytest.mark.anyio
async def test_read_cut_mid_body_raises(store: S3BlobStore, fault_proxy: FaultProxy) -> None:
    data = random_bytes(8 * MiB, seed=8)
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(data))
    fault_proxy.set("drop_response", after=MiB // 2)
    received = bytearray()
    with pytest.raises(BlobStoreUnavailable):
        async for chunk in await store.open(blob_id):
            received += chunk
    assert len(received) < len(data)
    assert data.startswith(received)  # what came before the cut was right
    fault_proxy.set("pass")
    assert await read_all(store, blob_id) == data


@pytest.mark.anyio
async def test_flipped_byte_is_not_detected_here(
    store: S3BlobStore, fault_proxy: FaultProxy
) -> None:
    # S3 GETs carry no checksum the backend could check against: a byte flipped on the way
    # comes out as a clean read. The service verifies the recorded sha256 while streaming.
    data = random_bytes(300_000, seed=5)
    blob_id = new_blob_id()
    await store.put(blob_id, chunked(data))
    fault_proxy.set("flip")
    corrupted = await read_all(store, blob_id)
    assert len(corrupted) == len(data) and corrupted != data
    assert sum(a != b for a, b in zip(corrupted, data, strict=True)) == 1
    fault_proxy.set("pass")
    assert await read_all(store, blob_id) == data
