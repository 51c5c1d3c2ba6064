"""A primary and a replica, local and S3 both ways, with the S3 side behind a fault proxy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.blobs.contract import (
    BlobStoreContract,
    chunked,
    listed,
    random_bytes,
    read_all,
    read_chunks,
)
from tests.s3.fixtures import SeaweedFS
from tests.s3.proxy import FaultProxy
from tfstorage.blobs import BlobNotFound, BlobStore, BlobStoreUnavailable, new_blob_id
from tfstorage.blobs.local import LocalBlobStore
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.blobs.s3 import S3BlobStore, S3Config

MiB = 1024 * 1024


def s3_store(engine: SeaweedFS, prefix: str, endpoint_url: str | None = None) -> S3BlobStore:
    return S3BlobStore(
        S3Config(
            endpoint_url=endpoint_url or engine.endpoint_url,
            bucket=engine.bucket,
            access_key=engine.access_key,
            secret_key=engine.secret_key,
            region=engine.region,
            prefix=prefix,
            part_size=5 * MiB,
            timeout_seconds=1.0,
            max_retries=1,
        )
    )


class TestLocalPrimaryS3Replica(BlobStoreContract):
    @pytest.fixture
    async def store(
        self, tmp_path: Path, seaweedfs: SeaweedFS, s3_prefix: str
    ) -> AsyncIterator[BlobStore]:
        store = ReplicatedBlobStore(
            LocalBlobStore(tmp_path / "primary"),
            s3_store(seaweedfs, s3_prefix),
        )
        yield store
        await store.close()


class TestS3PrimaryLocalReplica(BlobStoreContract):
    @pytest.fixture
    async def store(
        self, tmp_path: Path, seaweedfs: SeaweedFS, s3_prefix: str
    ) -> AsyncIterator[BlobStore]:
        store = ReplicatedBlobStore(
            s3_store(seaweedfs, s3_prefix),
            LocalBlobStore(tmp_path / "replica"),
        )
        yield store
        await store.close()


@pytest.fixture
async def s3_primary(
    tmp_path: Path, seaweedfs: SeaweedFS, fault_proxy: FaultProxy, s3_prefix: str
) -> AsyncIterator[ReplicatedBlobStore]:
    """S3 primary behind the proxy, local replica."""
    store = ReplicatedBlobStore(
        s3_store(seaweedfs, s3_prefix, fault_proxy.endpoint_url),
        LocalBlobStore(tmp_path / "replica"),
    )
    yield store
    await store.close()


@pytest.fixture
async def s3_replica(
    tmp_path: Path, seaweedfs: SeaweedFS, fault_proxy: FaultProxy, s3_prefix: str
) -> AsyncIterator[ReplicatedBlobStore]:
    """Local primary, S3 replica behind the proxy."""
    store = ReplicatedBlobStore(
        LocalBlobStore(tmp_path / "primary"),
        s3_store(seaweedfs, s3_prefix, fault_proxy.endpoint_url),
    )
    yield store
    await store.close()


@pytest.mark.anyio
async def test_writes_reach_both(s3_replica: ReplicatedBlobStore) -> None:
    data = random_bytes(6 * MiB + 1)
    blob_id = new_blob_id()
    assert await s3_replica.put(blob_id, chunked(data)) == len(data)
    assert await read_all(s3_replica.primary, blob_id) == data
    assert await read_all(s3_replica.replica, blob_id) == data
    assert await read_all(s3_replica, blob_id, 5, 7) == data[5:7]
    await s3_replica.delete(blob_id)
    for side in (s3_replica.primary, s3_replica.replica):
        with pytest.raises(BlobNotFound):
            await side.stat(blob_id)


@pytest.mark.anyio
async def test_primary_down_reads_keep_working(
    s3_primary: ReplicatedBlobStore, fault_proxy: FaultProxy
) -> None:
    data = random_bytes(3 * MiB + 5, seed=1)
    blob_id = new_blob_id()
    await s3_primary.put(blob_id, chunked(data))
    fault_proxy.set("refuse")
    assert await read_all(s3_primary, blob_id) == data
    assert await read_all(s3_primary, blob_id, MiB, 2 * MiB) == data[MiB : 2 * MiB]
    assert (await s3_primary.stat(blob_id)).size == len(data)
    # The replica may lag behind: its "not found" is no answer while the primary is down.
    with pytest.raises(BlobStoreUnavailable):
        await s3_primary.open(new_blob_id())
    # Writes need the primary: it is the source of truth, and the replica must not hold
    # blobs the primary never had.
    with pytest.raises(BlobStoreUnavailable):
        await s3_primary.put(new_blob_id(), chunked(b"while down"))
    await s3_primary.check()  # reads are served: not down as a whole
    health = await s3_primary.health()
    assert health["status"] == "degraded"
    assert health["primary"]["ok"] is False and health["replica"]["ok"] is True
    fault_proxy.set("pass")
    assert (await s3_primary.health())["status"] == "ok"


@pytest.mark.anyio
async def test_primary_failing_mid_read_goes_on_from_the_replica(
    s3_primary: ReplicatedBlobStore, fault_proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    data = random_bytes(8 * MiB, seed=2)
    blob_id = new_blob_id()
    await s3_primary.put(blob_id, chunked(data))
    fault_proxy.set("drop_response", after=MiB)
    with caplog.at_level(logging.WARNING):
        assert await read_all(s3_primary, blob_id, 10) == data[10:]
    assert "going on from the replica" in caplog.text


@pytest.mark.anyio
async def test_blob_lost_on_primary_is_served_by_replica(s3_primary: ReplicatedBlobStore) -> None:
    blob_id = new_blob_id()
    await s3_primary.put(blob_id, chunked(b"kept twice"))
    await s3_primary.primary.delete(blob_id)
    assert await read_all(s3_primary, blob_id) == b"kept twice"
    assert b"".join(await read_chunks(await s3_primary.open_replica(blob_id))) == b"kept twice"


@pytest.mark.anyio
async def test_replica_down_writes_succeed_and_catch_up(
    s3_replica: ReplicatedBlobStore, fault_proxy: FaultProxy
) -> None:
    kept = new_blob_id()
    await s3_replica.put(kept, chunked(b"kept"))
    fault_proxy.set("refuse")
    written = {new_blob_id(): random_bytes(n * 1000 + 1, seed=n) for n in range(3)}
    for blob_id, data in written.items():
        await s3_replica.put(blob_id, chunked(data))
        assert await read_all(s3_replica, blob_id) == data
    await s3_replica.delete(kept)
    health = await s3_replica.health()
    assert health["replica"]["ok"] is False and health["pending_replication"] == 4
    assert health["replica"]["endpoint"] == fault_proxy.endpoint_url
    assert health["replica"]["type"] == "s3" and health["primary"] == {"type": "local", "ok": True}
    await s3_replica.check()  # the primary serves
    report = await s3_replica.replicate()  # still down: everything stays queued
    assert report.failed == 4 and (await s3_replica.health())["pending_replication"] >= 4

    fault_proxy.set("pass")
    report = await s3_replica.replicate()
    assert (report.copied, report.deleted, report.failed) == (3, 1, 0)
    for blob_id, data in written.items():
        assert await read_all(s3_replica.replica, blob_id) == data
    with pytest.raises(BlobNotFound):
        await s3_replica.replica.stat(kept)
    assert (await s3_replica.health())["pending_replication"] == 0
    assert await s3_replica.replicate() == type(report)()


@pytest.mark.anyio
async def test_full_replication_compares_listings(s3_replica: ReplicatedBlobStore) -> None:
    only_primary, only_replica, both = new_blob_id(), new_blob_id(), new_blob_id()
    await s3_replica.primary.put(only_primary, chunked(b"missed"))
    await s3_replica.replica.put(only_replica, chunked(b"orphan"))
    await s3_replica.put(both, chunked(b"fine"))
    report = await s3_replica.replicate(full=True)
    assert (report.copied, report.replica_only) == (1, 1)
    assert await read_all(s3_replica.replica, only_primary) == b"missed"
    assert set(await listed(s3_replica)) == {only_primary, both}  # the primary's view
