"""A replica behind the service: corrupt or missing primary bytes are served from it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN, make_settings
from tests.s3.fixtures import SeaweedFS, s3_settings_overrides
from tests.s3.proxy import FaultProxy
from tfstorage.api.app import create_app
from tfstorage.config import Settings

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
        yield app, settings


def blob_file(root: Path) -> Path:
    [path] = [p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts]
    return path


async def test_corrupt_primary_is_refused_then_served_from_the_replica(
    replicated: tuple[FastAPI, Settings],
) -> None:
    app, settings = replicated
    data = os.urandom(3 * 1024 * 1024 + 5)
    async with await client_for(app) as c:
        assert (await c.put("/api/v1/objects/models/w.bin", content=data)).status_code == 200
        primary = blob_file(settings.blob_dir)
        assert blob_file(settings.replica_data_dir).read_bytes() == data  # copied on write
        with open(primary, "r+b") as f:
            f.seek(1000)
            f.write(bytes([data[1000] ^ 0xFF]))
        received = b""
        try:
            async with c.stream("GET", "/api/v1/download/models/w.bin") as r:
                async for chunk in r.aiter_bytes():
                    received += chunk
        except httpx.HTTPError:
            pass
        assert received != data and len(received) < len(data)  # never a clean wrong answer
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
        await c.put("/api/v1/objects/models/m.bin", content=b"model bytes")
        blob_file(settings.blob_dir).unlink()
        r = await c.get("/api/v1/download/models/m.bin")
        assert r.status_code == 200 and r.content == b"model bytes"
        report = (await c.post("/api/v1/storage/replicate", params={"verify": "true"})).json()
        assert report["replica"] is True and report["replica_only"] == 1


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
