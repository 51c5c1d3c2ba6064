"""A replica behind the service: corrupt or missing primary bytes are served from it."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI

from tests.api.blob_damage import StoredBlobs
from tests.api.conftest import ADMIN, make_settings, rendezvous, workers_starting_together
from tests.s3.fixtures import SeaweedFS, s3_settings_overrides
from tests.s3.proxy import FaultProxy
from tests.stored_blobs import blob_file_paths
from tfstorage.api.app import create_app
from tfstorage.config import Settings
from tfstorage.service import replication

pytestmark = pytest.mark.anyio


async def client_for(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN)


@pytest.fixture
async def replicated(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, Settings]]:
    settings = make_settings(
        tmp_path, replica_storage_type="local", replica_data_dir=tmp_path / "replica"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # The start-up maintenance run catches the replica up under the replication
        # lease; a test that deletes or queues blobs must not race with it.
        with anyio.fail_after(60):
            await app.state.storage.started_up.wait()
        yield app, settings


async def read_until_cut(c: httpx.AsyncClient, url: str) -> bytes:
    """What a download delivered before it ended, cleanly or not."""
    received = b""
    try:
        async with c.stream("GET", url) as r:
            async for chunk in r.aiter_bytes():
                received += chunk
    except httpx.HTTPError:
        pass
    return received


def blob_file(root: Path) -> Path:
    [path] = blob_file_paths(root)
    return path


@pytest.mark.parametrize(
    ("size", "first_read_whole"),
    [
        # Checked against its SHA-256, known only at the end: the first read is cut.
        (1024 * 1024 + 5, False),
        # Checked block by block: the damaged block and the rest come from the replica.
        (3 * 1024 * 1024 + 5, True),
    ],
)
async def test_corrupt_primary_is_marked_then_served_from_the_replica(
    replicated: tuple[FastAPI, Settings], size: int, first_read_whole: bool
) -> None:
    app, settings = replicated
    data = os.urandom(size)
    async with await client_for(app) as c:
        r = await c.put("/api/v1/objects/models/w.bin", content=data)
        assert r.status_code == 200
        primary = blob_file(settings.blob_dir)
        assert blob_file(settings.replica_data_dir).read_bytes() == data  # copied on write
        with open(primary, "r+b") as f:
            f.seek(1000)
            f.write(bytes([data[1000] ^ 0xFF]))
        received = await read_until_cut(c, "/api/v1/download/models/w.bin")
        if first_read_whole:
            assert received == data
        else:
            assert received != data and len(received) < len(data)  # never a clean wrong answer
        version = app.state.storage.ctx.index.get_version(r.json()["file_id"])
        assert version.damage == "corrupt"
        again = await c.get("/api/v1/download/models/w.bin")
        assert again.status_code == 200 and again.content == data  # from the replica
        health = (await c.get("/api/v1/storage/health")).json()
        assert health["blob_store"]["type"] == "replicated"
        assert health["blob_store"]["primary"]["ok"] and health["blob_store"]["replica"]["ok"]


async def test_missing_primary_blob_is_read_from_the_replica(
    replicated: tuple[FastAPI, Settings],
) -> None:
    app, settings = replicated
    async with await client_for(app) as c:
        r = await c.put("/api/v1/objects/models/m.bin", content=b"model bytes")  # packed
        StoredBlobs(settings).delete(
            app.state.storage.ctx.index.get_version(r.json()["file_id"]).blob_id
        )
        r = await c.get("/api/v1/download/models/m.bin")
        assert r.status_code == 200 and r.content == b"model bytes"
        report = (await c.post("/api/v1/storage/replicate", params={"verify": "true"})).json()
        assert report["replica"] is True and report["replica_only"] == 1


async def caught_up(app: FastAPI) -> None:
    """Wait until the replica holds every blob. The copy made on upload reads the blob
    back from the primary; on a stalled machine that read can time out, and the upload
    still succeeds with the copy queued (by design: the primary holds it durably)."""
    storage = app.state.storage
    with anyio.fail_after(60):
        await storage.started_up.wait()  # its catch-up run holds the replication lease
        while (report := await storage.replicate()) is not None and (report.busy or report.failed):
            await anyio.sleep(0.5)
    assert report is not None, "no replica configured"
    assert await storage.ctx.blobs.journal.pending() == 0


@pytest.fixture
def fault_proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    proxy = FaultProxy(seaweedfs.s3_port)
    yield proxy
    proxy.close()


async def test_s3_primary_down_reads_from_local_replica(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_prefix: str, fault_proxy: FaultProxy
) -> None:
    overrides = s3_settings_overrides(seaweedfs, seaweedfs.bucket, prefix=s3_prefix)
    overrides["s3_endpoint_url"] = fault_proxy.endpoint_url
    settings = make_settings(
        tmp_path, **overrides, replica_storage_type="local", replica_data_dir=tmp_path / "replica"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        assert (
            await c.put("/api/v1/objects/models/a.bin", content=b"primary+replica")
        ).status_code == 200
        await caught_up(app)
        assert blob_file(settings.replica_data_dir).read_bytes() == b"primary+replica"
        fault_proxy.set("refuse")
        r = await c.get("/api/v1/download/models/a.bin")
        assert r.status_code == 200 and r.content == b"primary+replica"
        up = await c.put("/api/v1/objects/models/b.bin", content=b"new")
        assert up.status_code == 503 and up.json()["code"] == "ServiceUnavailable"
        assert "retry-after" in up.headers
        assert (
            await c.get("/api/v1/download/models/b.bin")
        ).status_code == 404  # nothing half-recorded
        health = await c.get("/api/v1/storage/health")
        assert health.json()["blob_store"]["primary"]["ok"] is False
        fault_proxy.set("pass")
        assert (await c.put("/api/v1/objects/models/b.bin", content=b"new")).status_code == 200


@pytest.fixture
async def s3_behind_proxy(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_prefix: str, fault_proxy: FaultProxy
) -> AsyncIterator[httpx.AsyncClient]:
    overrides = s3_settings_overrides(seaweedfs, seaweedfs.bucket, prefix=s3_prefix)
    overrides.update(
        s3_endpoint_url=fault_proxy.endpoint_url, s3_timeout_seconds=2.0, s3_max_retries=1
    )
    app = create_app(make_settings(tmp_path, **overrides))
    async with app.router.lifespan_context(app), await client_for(app) as c:
        yield c


async def test_engine_down_fails_fast_and_recovers(
    s3_behind_proxy: httpx.AsyncClient, fault_proxy: FaultProxy
) -> None:
    c = s3_behind_proxy
    assert (await c.put("/api/v1/objects/models/before.bin", content=b"kept")).status_code == 200
    fault_proxy.set("refuse")
    started = anyio.current_time()
    up = await c.put("/api/v1/objects/models/during.bin", content=b"x" * 100_000)
    down = await c.get("/api/v1/download/models/before.bin")
    assert anyio.current_time() - started < 2 * (2.0 * 2 + 5)  # within the configured timeouts
    for r in (up, down):
        assert r.status_code == 503 and r.json()["code"] == "ServiceUnavailable"
        assert r.headers["retry-after"]
    health = await c.get("/api/v1/storage/health")
    assert health.status_code == 503
    body = health.json()
    assert body["minio_connected"] is False
    assert body["blob_store"]["type"] == "s3" and body["blob_store"]["endpoint"]
    assert "bucket" in body["blob_store"]
    # Nothing was recorded for bytes that were not stored.
    assert [o["key"] for o in (await c.get("/api/v1/list/models")).json()["objects"]] == [
        "before.bin"
    ]
    fault_proxy.set("pass")  # the engine is back: no restart needed
    assert (await c.get("/api/v1/download/models/before.bin")).content == b"kept"
    assert (await c.put("/api/v1/objects/models/during.bin", content=b"now")).status_code == 200
    assert (await c.get("/api/v1/storage/health")).json()["minio_connected"] is True


async def test_a_byte_flipped_on_the_way_from_the_engine_aborts_the_download(
    s3_behind_proxy: httpx.AsyncClient, fault_proxy: FaultProxy
) -> None:
    c = s3_behind_proxy
    data = os.urandom(2 * 1024 * 1024)
    assert (await c.put("/api/v1/objects/models/f.bin", content=data)).status_code == 200
    fault_proxy.set("flip")
    received = await read_until_cut(c, "/api/v1/download/models/f.bin")
    assert len(received) < len(data)  # aborted before the end, never a clean wrong answer


async def test_truncated_primary_is_served_from_replica_and_verify_keeps_the_good_copy(
    replicated: tuple[FastAPI, Settings],
) -> None:
    app, settings = replicated
    data = os.urandom(300_000)
    async with await client_for(app) as c:
        await c.put("/api/v1/objects/models/t.bin", content=data)
        primary = blob_file(settings.blob_dir)
        with open(primary, "r+b") as f:
            f.truncate(1000)
        r = await c.get("/api/v1/download/models/t.bin")
        assert r.status_code == 200 and r.content == data
        # The failed read started a background verification that repairs the primary
        # from the replica; let it finish, then damage the primary again, so that the
        # catch-up below meets a truncated primary whatever the timing.
        await app.state.storage.integrity.settle()
        assert primary.read_bytes() == data
        with open(primary, "r+b") as f:
            f.truncate(1000)
        report = (await c.post("/api/v1/storage/replicate", params={"verify": "true"})).json()
        assert report["mismatched"] == 1 and report["copied"] == 0
        assert settings.replica_data_dir is not None
        assert blob_file(settings.replica_data_dir).read_bytes() == data  # never overwritten
        # Uploading the same content again rewrites the damaged primary copy.
        again = await c.put("/api/v1/objects/models/t2.bin", content=data)
        assert again.json()["deduplicated"] is True
        assert primary.read_bytes() == data


@pytest.mark.parametrize("size", [10, 100_000], ids=["packed", "file"])
async def test_a_new_upload_heals_a_missing_blob(tmp_path: Path, size: int) -> None:
    settings = make_settings(tmp_path)
    data = os.urandom(size)
    app = create_app(settings)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        r = await c.put("/api/v1/objects/models/a.bin", content=data)
        blob_id = app.state.storage.ctx.index.get_version(r.json()["file_id"]).blob_id
        StoredBlobs(settings).delete(blob_id)
        assert (await c.get("/api/v1/download/models/a.bin")).status_code == 500
        r = await c.put("/api/v1/objects/models/b.bin", content=data)
        assert r.status_code == 200 and r.json()["deduplicated"] is True
        assert (await c.get("/api/v1/download/models/a.bin")).content == data
        assert (await c.get("/api/v1/download/models/b.bin")).content == data


async def test_a_check_that_read_the_bytes_before_a_heal_leaves_the_healed_blob_clean(
    tmp_path: Path,
) -> None:
    # A background check (the one a failed read starts, or the scrub) reads damaged
    # bytes; before it records its verdict, a new upload of the same content rewrites
    # them. The stale verdict must not mark the healed blob: reads would refuse it.
    settings = make_settings(tmp_path)
    data = os.urandom(100_000)  # a file blob: truncated in place below
    app = create_app(settings)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        storage = app.state.storage
        r = await c.put("/api/v1/objects/models/a.bin", content=data)
        blob_id = storage.ctx.index.get_version(r.json()["file_id"]).blob_id
        StoredBlobs(settings).write(blob_id, data[:50_000])
        stored = storage.ctx.integrity.stored_blob(blob_id)
        read, go_on = anyio.Event(), anyio.Event()

        async def gate(_: int) -> None:  # the check has read the bytes: hold its verdict
            read.set()
            await go_on.wait()

        statuses: list[str] = []

        async def check() -> None:
            statuses.append(
                (await storage.integrity.verify_blob(stored, throttle=gate)).primary.status
            )

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(check)
                await read.wait()
                r = await c.put("/api/v1/objects/models/b.bin", content=data)
                assert r.status_code == 200 and r.json()["deduplicated"] is True
                go_on.set()
        assert statuses == ["truncated"]  # what the check saw
        assert storage.ctx.integrity.damage_of(blob_id) is None
        assert (await c.get("/api/v1/download/models/a.bin")).content == data


async def test_a_missing_bucket_is_not_recreated_when_the_index_has_blobs(
    tmp_path: Path, seaweedfs: SeaweedFS, s3_prefix: str
) -> None:
    settings = make_settings(
        tmp_path, **s3_settings_overrides(seaweedfs, seaweedfs.bucket, prefix=s3_prefix)
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        assert (await c.put("/api/v1/objects/models/x.bin", content=b"1")).status_code == 200
    typo = settings.model_copy(
        update={"s3_bucket": "tfstorage-typo-" + s3_prefix.strip("/")[-8:].lower()}
    )
    app = create_app(typo)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        health = await c.get("/api/v1/storage/health")
        assert health.status_code == 503 and health.json()["minio_connected"] is False
    assert typo.s3_bucket not in [b["Name"] for b in seaweedfs.client().list_buckets()["Buckets"]]


async def test_a_journal_file_of_an_older_release_is_moved_into_the_index(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, replica_storage_type="local", replica_data_dir=tmp_path / "replica"
    )
    app = create_app(settings)
    data = os.urandom(10_000)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        assert (await c.put("/api/v1/objects/models/old.bin", content=data)).status_code == 200
    assert settings.replica_data_dir is not None
    copy = blob_file(settings.replica_data_dir)
    copy.unlink()  # the replica missed it, and the old release queued it in a file
    log_file = settings.data_dir / "replica-pending.log"
    log_file.write_text(f"put {copy.name}\nnot a line\n")
    (settings.data_dir / "replica-pending.log.1a2b3c4d.draining").write_text(f"put {copy.name}\n")

    app = create_app(settings)
    async with app.router.lifespan_context(app), await client_for(app) as c:
        assert not log_file.exists()  # imported before serving
        assert not list(settings.data_dir.glob("replica-pending.log*"))
        for _ in range(100):  # the start-up maintenance run catches up
            health = (await c.get("/api/v1/storage/health")).json()["blob_store"]
            if health["pending_replication"] == 0:
                break
            await anyio.sleep(0.05)
        assert health["pending_replication"] == 0
        assert blob_file(settings.replica_data_dir).read_bytes() == data


async def test_one_instance_at_a_time_catches_the_replica_up(
    replicated: tuple[FastAPI, Settings],
) -> None:
    from tfstorage.index.lifecycle import LifecycleIndex
    from tfstorage.service.replication import LEASE

    app, settings = replicated
    storage = app.state.storage
    async with await client_for(app) as c:
        await c.put("/api/v1/objects/models/queued.bin", content=b"queued")
    assert settings.replica_data_dir is not None
    copy = blob_file(settings.replica_data_dir)
    copy.unlink()
    await storage.replication.journal.add("put", copy.name)

    leases = LifecycleIndex(storage.ctx.index.engine)
    # The fixture waited for the start-up catch-up, so the lease is free.
    assert leases.acquire_lease(LEASE, "another-instance", 60)
    report = await storage.replicate()
    assert report.busy and report.copied == 0 and not copy.exists()
    assert await storage.replication.journal.pending() == 1

    leases.release_lease(LEASE, "another-instance")
    report = await storage.replicate()
    assert (report.busy, report.copied, report.failed) == (False, 1, 0)
    assert copy.read_bytes() == b"queued"
    assert await storage.replication.journal.pending() == 0
    assert leases.acquire_lease(LEASE, "another-instance", 60)  # released after the run


async def test_workers_starting_together_move_an_older_journal_file_in_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker read the file and queued its entries, the second after the first had
    queued them (or failed its start-up when the first deleted the file mid-read)."""
    settings = make_settings(
        tmp_path, replica_storage_type="local", replica_data_dir=tmp_path / "replica"
    )
    settings.data_dir.mkdir(parents=True)
    blob_ids = [os.urandom(16).hex() for _ in range(3)]
    (settings.data_dir / "replica-pending.log").write_text(
        "".join(f"put {blob_id}\n" for blob_id in blob_ids)
    )
    rendezvous(monkeypatch, replication, "_read_file_journal", 3)
    with caplog.at_level(logging.INFO, logger="tfstorage.service.replication"):
        await workers_starting_together(settings, 3)
    moved = [r.getMessage() for r in caplog.records if "moved from" in r.getMessage()]
    assert moved == ["replication: 3 queued entries moved from replica-pending.log into the index"]
    assert not list(settings.data_dir.glob("replica-pending.log*"))
