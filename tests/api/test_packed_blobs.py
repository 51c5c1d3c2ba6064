"""Packed blobs (PACK_THRESHOLD) through the whole service: dedup, ranges checked by their
block checksums, verify and its repair from a replica, orphans and unreferenced blobs
collected by garbage collection, which then compacts the packs."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN, make_settings
from tfstorage.api.app import create_app
from tfstorage.blobs.packs import PackedBlobStore
from tfstorage.blobs.replicated import ReplicatedBlobStore
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio

DATA = os.urandom(40_000)  # under the threshold: packed; 10 blocks of 4 KiB


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        pack_threshold="64KB",
        block_size="4KB",
        replica_storage_type="local",
        replica_data_dir=tmp_path / "replica",
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
        yield c


def location(settings: Settings, blob_id: str) -> tuple[Path, int] | None:
    """The pack holding `blob_id` and where its bytes start there."""
    packs = settings.blob_dir / ".packs"
    conn = sqlite3.connect(packs / "index.sqlite")
    try:
        row = conn.execute(
            "SELECT pack, offset FROM blobs WHERE blob_id = ?", (blob_id,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else (packs / row[0], row[1] + 48)


def flip(pack: Path, start: int, offset: int) -> None:
    with pack.open("r+b") as f:
        f.seek(start + offset)
        byte = f.read(1)
        f.seek(start + offset)
        f.write(bytes([byte[0] ^ 1]))


def blob_of(app: FastAPI, file_id: str) -> str:
    blob_id: str = app.state.storage.ctx.index.get_version(file_id).blob_id
    return blob_id


async def put(c: httpx.AsyncClient, url: str, data: bytes) -> str:
    r = await c.put(url, content=data)
    assert r.status_code == 200, r.text
    file_id: str = r.json()["file_id"]
    return file_id


async def test_packed_blobs_work_as_file_blobs(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    blobs = app.state.storage.ctx.blobs
    assert isinstance(blobs, ReplicatedBlobStore) and isinstance(blobs.primary, PackedBlobStore)
    file_id = await put(client, "/api/v1/objects/models/a.bin", DATA)
    blob_id = blob_of(app, file_id)
    found = location(settings, blob_id)
    assert found is not None  # packed, not a file
    assert not (settings.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id).exists()
    # Dedup: the same bytes under another key share the blob.
    other = await put(client, "/api/v1/objects/models/b.bin", DATA)
    assert blob_of(app, other) == blob_id

    r = await client.get("/api/v1/download/models/a.bin", headers={"Range": "bytes=5000-9999"})
    assert r.status_code == 206 and r.content == DATA[5000:10000]

    # A flipped byte in the pack: verify finds it (its block) and repairs from the replica.
    flip(*found, 12_345)
    report = (await client.post(f"/api/v1/files/{file_id}/verify")).json()
    assert report["status"] == "corrupt" and report["repaired"] is True, report
    assert [b["block"] for b in report["damaged_blocks"]] == [3]
    assert (await client.post(f"/api/v1/files/{file_id}/verify")).json()["status"] == "ok"
    assert (await client.get("/api/v1/download/models/a.bin")).content == DATA
    rewritten = location(settings, blob_id)
    assert rewritten is not None and rewritten != found  # rewritten into a pack

    # A ranged read checks its blocks: a damaged one is read from the replica instead.
    flip(*rewritten, 12_345)
    r = await client.get("/api/v1/download/models/a.bin", headers={"Range": "bytes=12288-16383"})
    assert r.status_code == 206 and r.content == DATA[12288:16384]
    await app.state.storage.integrity.settle()  # its background repair from the replica
    assert (await client.get("/api/v1/download/models/a.bin")).content == DATA

    # Both keys deleted for good, and an orphan: garbage collection removes both blobs,
    # then compaction the pack records they leave.
    orphan = "0123456789abcdef" * 2

    async def one() -> AsyncIterator[bytes]:
        yield b"an orphan"

    await blobs.put(orphan, one())
    for key, fid in (("a.bin", file_id), ("b.bin", other)):
        r = await client.delete(f"/api/v1/delete/models/{key}", params={"version_id": fid})
        assert r.status_code == 200, r.text
    await blobs.primary.close()  # the app's active pack sealed, as at a restart
    app.state.storage.ctx.blobs.primary = PackedBlobStore(
        settings.blob_dir, threshold=64 * 1024, block_size=4096
    )
    report = await app.state.storage.gc.run_once(now=time.time() + 7200)
    assert (report.unreferenced_blobs, report.orphan_blobs) == (1, 1), report
    assert report.incomplete_writes >= 1  # the packs removed
    assert location(settings, blob_id) is None and location(settings, orphan) is None
    assert list((settings.blob_dir / ".packs").glob("*.pack")) == []
