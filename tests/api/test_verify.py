"""Issue 6, must-show 3: a byte flipped in a stored blob is found by `verify`, marked in
the index, refused by downloads, shown by health and metrics, and repaired from a
replica when there is one (on local disk and on S3)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.api.blob_damage import StoredBlobs
from tests.api.conftest import ADMIN, assert_error, make_settings
from tests.s3.fixtures import s3_settings_overrides
from tfstorage.api.app import create_app
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio

DATA = os.urandom(300_000)  # above the inline-read size: streamed in chunks


def blob_of(app: FastAPI, file_id: str) -> str:
    blob_id: str = app.state.storage.ctx.index.get_version(file_id).blob_id
    return blob_id


async def put(c: httpx.AsyncClient, url: str, data: bytes) -> str:
    r = await c.put(url, content=data)
    assert r.status_code == 200, r.text
    file_id: str = r.json()["file_id"]
    return file_id


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of one metric family, by their label values joined with ','."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[",".join(sample.labels.values())] = sample.value
    return found


async def test_a_flipped_byte_is_reported_marked_and_refused(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    stored = StoredBlobs(settings)
    good_id = await put(client, "/api/v1/objects/models/good.bin", b"intact" * 1000)
    file_id = await put(client, "/api/v1/objects/models/w.bin", DATA)
    blob_id = blob_of(app, file_id)
    damaged = stored.flip(blob_id, 123_456)

    good = (await client.post(f"/api/v1/files/{good_id}/verify")).json()
    assert good["ok"] is True and good["status"] == "ok"
    assert good["actual"] == good["expected"]

    r = await client.post(f"/api/v1/files/{file_id}/verify")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["file_id"] == file_id
    assert (report["bucket"], report["key"]) == ("models", "w.bin")
    assert report["ok"] is False and report["status"] == "corrupt"
    assert report["repaired"] is False and "replica" not in report
    assert report["expected"] == {
        "md5": hashlib.md5(DATA).hexdigest(),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "size": len(DATA),
    }
    assert report["actual"] == {
        "md5": hashlib.md5(damaged).hexdigest(),
        "sha256": hashlib.sha256(damaged).hexdigest(),
        "size": len(DATA),
    }

    entries = (await client.get("/api/v1/audit", params={"bucket": "models"})).json()["entries"]
    [audited] = [e for e in entries if e["action"] == "verify"]  # the good one is not logged
    assert audited["file_id"] == file_id and audited["detail"]["status"] == "corrupt"

    # Refused before any byte: a JSON error, whole downloads and ranges alike.
    for headers in ({}, {"Range": "bytes=0-99"}):
        refused = await client.get("/api/v1/download/models/w.bin", headers=headers)
        assert_error(refused, 500, "ObjectCorrupted")
        assert damaged[:100] not in refused.content
    assert_error(await client.get(f"/api/v1/files/download/{file_id}"), 500, "ObjectCorrupted")
    assert (await client.get("/api/v1/download/models/good.bin")).status_code == 200

    health = await client.get("/api/v1/health/detailed")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded"
    integrity = body["checks"]["integrity"]
    assert (
        integrity["ok"] is False and integrity["corrupt"] == 1 and integrity["damaged_blobs"] == 1
    )

    metrics = (await client.get("/metrics")).text
    assert samples(metrics, "storage_integrity_damaged_blobs")["corrupt"] == 1
    assert samples(metrics, "storage_integrity_damage_found_total")["corrupt"] >= 1
    assert samples(metrics, "storage_integrity_bytes_read_total")[""] >= len(DATA)

    # The mark is in the index: another instance on the same index refuses the bytes
    # without reading them, and without a replica the blob stays marked.
    other = create_app(settings)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c2:
            assert_error(await c2.get("/api/v1/download/models/w.bin"), 500, "ObjectCorrupted")
            again = (await c2.post(f"/api/v1/files/{file_id}/verify")).json()
            assert again["status"] == "corrupt" and again["ok"] is False
    # Verification never rewrote the index's checksums from the bad bytes.
    info = (await client.get(f"/api/v1/files/{file_id}")).json()
    assert info["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert stored.read(blob_id) == damaged

    # Uploading the same content again rewrites the stored bytes and clears the mark.
    assert (await client.put("/api/v1/objects/models/w2.bin", content=DATA)).json()["deduplicated"]
    assert stored.read(blob_id) == DATA
    r = await client.get("/api/v1/download/models/w.bin")
    assert r.status_code == 200 and r.content == DATA
    health = (await client.get("/api/v1/health/detailed")).json()
    assert health["checks"]["integrity"]["ok"] is True


async def test_truncated_and_missing_blobs(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    stored = StoredBlobs(settings)
    short_id = await put(client, "/api/v1/objects/datasets/short.npy", DATA)
    gone_id = await put(client, "/api/v1/objects/datasets/gone.npy", DATA[::-1])
    stored.truncate(blob_of(app, short_id), 1000)
    stored.delete(blob_of(app, gone_id))

    short = (await client.post(f"/api/v1/files/{short_id}/verify")).json()
    assert short["status"] == "truncated" and short["ok"] is False
    assert short["actual"]["size"] == 1000
    assert short["actual"]["sha256"] == hashlib.sha256(DATA[:1000]).hexdigest()
    gone = (await client.post(f"/api/v1/files/{gone_id}/verify")).json()
    assert gone["status"] == "missing" and gone["actual"] is None

    for key in ("short.npy", "gone.npy"):
        assert_error(await client.get(f"/api/v1/download/datasets/{key}"), 500, "ObjectCorrupted")
    integrity = (await client.get("/api/v1/health/detailed")).json()["checks"]["integrity"]
    assert (integrity["truncated"], integrity["missing"], integrity["corrupt"]) == (1, 1, 0)


async def test_a_mark_from_a_read_is_cleared_when_the_stored_bytes_are_right(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Bytes flipped on the way from the engine, not on disk: the read's mark is checked
    in the background against the stored bytes and cleared."""
    file_id = await put(client, "/api/v1/objects/models/t.bin", DATA)
    blob_id = blob_of(app, file_id)
    storage = app.state.storage
    await storage.reader._integrity.mark(blob_id, "corrupt")
    await storage.integrity.settle()
    assert storage.ctx.integrity.damage_of(blob_id) is None
    r = await client.get("/api/v1/download/models/t.bin")
    assert r.status_code == 200 and r.content == DATA


async def test_verify_answers_for_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(f"/api/v1/files/{'0' * 32}/verify"), 404, "NoSuchVersion")
    assert_error(await client.post("/api/v1/files/not-an-id/verify"), 404, "NoSuchVersion")


async def test_a_failed_download_marks_the_blob_for_every_instance(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    file_id = await put(client, "/api/v1/objects/models/d.bin", DATA)
    StoredBlobs(settings).flip(blob_of(app, file_id), 5)
    received = b""
    try:
        async with client.stream("GET", "/api/v1/download/models/d.bin") as r:
            async for chunk in r.aiter_bytes():
                received += chunk
    except httpx.HTTPError:
        pass
    assert len(received) < len(DATA)  # cut, never a clean wrong answer
    # The read that found the damage recorded it: now refused up front.
    assert_error(await client.get("/api/v1/download/models/d.bin"), 500, "ObjectCorrupted")
    status = (await client.get("/api/v1/scrub")).json()
    [marked] = status["damaged"]["blobs"]
    assert marked["damage"] == "corrupt" and marked["versions"][0]["file_id"] == file_id


# With a replica ------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def replicated_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """A primary on local disk or on S3, with a local replica."""
    replica = {"replica_storage_type": "local", "replica_data_dir": tmp_path / "replica"}
    if request.param == "local":
        return make_settings(tmp_path, **replica)
    seaweed = request.getfixturevalue("seaweedfs")
    prefix = request.getfixturevalue("s3_prefix")
    overrides = s3_settings_overrides(seaweed, seaweed.bucket, prefix=prefix)
    return make_settings(tmp_path, **overrides, **replica)


@pytest.fixture
async def replicated(
    replicated_settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(replicated_settings)
    async with app.router.lifespan_context(app):
        # The maintenance run at start-up repairs marked blobs: it must not run into
        # a test that marks one itself (it did, on a loaded machine).
        await app.state.storage.started_up.wait()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            yield app, c


class ReplicaFiles:
    """The local replica's copy of a blob."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, blob_id: str) -> Path:
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id


async def test_a_corrupt_primary_is_repaired_from_the_replica(
    replicated: tuple[FastAPI, httpx.AsyncClient], replicated_settings: Settings
) -> None:
    app, c = replicated
    stored = StoredBlobs(replicated_settings)
    assert replicated_settings.replica_data_dir is not None
    replica = ReplicaFiles(replicated_settings.replica_data_dir)
    file_id = await put(c, "/api/v1/objects/models/r.bin", DATA)
    blob_id = blob_of(app, file_id)
    assert replica.path(blob_id).read_bytes() == DATA
    stored.flip(blob_id, 77)

    report = (await c.post(f"/api/v1/files/{file_id}/verify")).json()
    assert report["status"] == "corrupt" and report["repaired"] is True and report["ok"] is True
    assert report["replica"] == {"status": "ok", "repaired": False}
    assert stored.read(blob_id) == DATA  # rewritten from the good copy
    after = (await c.post(f"/api/v1/files/{file_id}/verify")).json()
    assert after["status"] == "ok" and after["actual"] == after["expected"]
    assert (await c.get("/api/v1/scrub")).json()["damaged"]["blobs"] == []  # mark cleared
    r = await c.get("/api/v1/download/models/r.bin")
    assert r.status_code == 200 and r.content == DATA

    # The other way round: a damaged replica copy is copied again from the primary.
    replica.path(blob_id).write_bytes(DATA[:10])
    report = (await c.post(f"/api/v1/files/{file_id}/verify")).json()
    assert report["status"] == "ok"
    assert report["replica"] == {"status": "truncated", "repaired": True}
    assert replica.path(blob_id).read_bytes() == DATA

    # A missing primary copy comes back too.
    stored.delete(blob_id)
    report = (await c.post(f"/api/v1/files/{file_id}/verify")).json()
    assert (report["status"], report["repaired"]) == ("missing", True)
    assert stored.read(blob_id) == DATA
    metrics = (await c.get("/metrics")).text
    assert samples(metrics, "storage_integrity_repaired_total")[""] == 3


async def test_a_failed_download_repairs_from_the_replica_in_the_background(
    replicated: tuple[FastAPI, httpx.AsyncClient], replicated_settings: Settings
) -> None:
    app, c = replicated
    stored = StoredBlobs(replicated_settings)
    file_id = await put(c, "/api/v1/objects/models/m.bin", DATA)
    blob_id = blob_of(app, file_id)
    stored.flip(blob_id, 200_000)
    try:
        async with c.stream("GET", "/api/v1/download/models/m.bin") as r:
            async for _ in r.aiter_bytes():
                pass
    except httpx.HTTPError:
        pass  # the read that found the damage is cut
    r = await c.get("/api/v1/download/models/m.bin")
    assert r.status_code == 200 and r.content == DATA  # from the replica, or repaired
    await app.state.storage.integrity.settle()
    assert stored.read(blob_id) == DATA
    assert (await c.get("/api/v1/scrub")).json()["damaged"]["blobs"] == []


async def test_a_blob_marked_elsewhere_is_read_from_the_replica_until_maintenance(
    replicated: tuple[FastAPI, httpx.AsyncClient], replicated_settings: Settings
) -> None:
    app, c = replicated
    storage = app.state.storage
    stored = StoredBlobs(replicated_settings)
    file_id = await put(c, "/api/v1/objects/models/e.bin", DATA)
    blob_id = blob_of(app, file_id)
    damaged = stored.flip(blob_id, 3)
    storage.ctx.integrity.mark_damaged(blob_id, "corrupt")  # as another instance found it
    r = await c.get("/api/v1/download/models/e.bin")
    assert r.status_code == 200 and r.content == DATA
    assert stored.read(blob_id) == damaged  # the primary was not read, nor yet repaired
    await storage.run_maintenance()
    assert stored.read(blob_id) == DATA
    assert storage.ctx.integrity.damage_of(blob_id) is None


async def test_both_copies_damaged_stays_marked_and_the_index_is_unchanged(
    replicated: tuple[FastAPI, httpx.AsyncClient], replicated_settings: Settings
) -> None:
    app, c = replicated
    stored = StoredBlobs(replicated_settings)
    assert replicated_settings.replica_data_dir is not None
    replica = ReplicaFiles(replicated_settings.replica_data_dir)
    file_id = await put(c, "/api/v1/objects/models/b.bin", DATA)
    blob_id = blob_of(app, file_id)
    bad_primary = stored.flip(blob_id, 1)
    replica.path(blob_id).write_bytes(DATA[:-1] + b"!")

    report = (await c.post(f"/api/v1/files/{file_id}/verify")).json()
    assert report["status"] == "corrupt" and report["ok"] is False
    assert report["repaired"] is False and report["replica"]["status"] == "corrupt"
    assert stored.read(blob_id) == bad_primary  # nothing "repaired" from bad bytes
    info = (await c.get(f"/api/v1/files/{file_id}")).json()
    assert info["sha256"] == hashlib.sha256(DATA).hexdigest() == report["expected"]["sha256"]
    received = b""
    try:
        async with c.stream("GET", "/api/v1/download/models/b.bin") as r:
            async for chunk in r.aiter_bytes():
                received += chunk
    except httpx.HTTPError:
        pass
    assert received != DATA
