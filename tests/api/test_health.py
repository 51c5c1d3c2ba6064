"""`/health` and `/api/v1/storage/health` (issue 10): `minio_connected` stays for the
original service's clients and means "the blob store answers", on every backend;
`blob_store_connected`, `index_connected` and each part's `state` say it plainly."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN, make_settings
from tfstorage.api.app import create_app
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio


async def test_health_names_the_backend_and_its_state(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for route in ("/health", "/api/v1/storage/health"):
        response = await client.get(route)
        assert response.status_code == 200
        body = response.json()
        assert body["minio_connected"] is True and body["blob_store_connected"] is True
        assert body["index_connected"] is True
        assert body["storage_type"] == settings.storage_type
        assert body["blob_store"]["type"] == settings.storage_type
        assert body["blob_store"]["state"] == "up" and body["index"]["state"] == "up"


async def test_a_local_blob_store_that_fails_reports_down(tmp_path: Path) -> None:
    """On local disk `minio_connected` follows the disk, not a MinIO that is not there."""
    settings = make_settings(tmp_path)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c,
        httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous,
    ):
        tmp = settings.blob_dir / ".tmp"
        shutil.rmtree(tmp)
        tmp.write_text("not a directory: nothing can be written here")
        response = await c.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy" and body["storage_type"] == "local"
        assert body["minio_connected"] is False and body["blob_store_connected"] is False
        assert body["blob_store"]["state"] == "down" and body["blob_store"]["error"]
        assert body["index_connected"] is True and body["index"]["state"] == "up"
        seen = await anonymous.get("/health")
        assert seen.status_code == 503
        assert set(seen.json()) == {"status", "service", "timestamp"}  # up or down, no more

        tmp.unlink()
        tmp.mkdir()
        healthy = (await c.get("/health")).json()
        assert healthy["minio_connected"] is True and healthy["blob_store"]["state"] == "up"
