"""Stats, health, metrics, legacy routes and the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from tests.api.conftest import assert_error
from tfstorage.api.deps import get_caller
from tfstorage.api.routes import objects
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio


async def test_stats_shapes(client: httpx.AsyncClient, settings: Settings) -> None:
    await client.put("/api/v1/objects/models/a.pt", content=b"x" * 2048)
    for url in ("/api/v1/stats", "/api/v1/storage/stats"):
        body = (await client.get(url)).json()
        for field in ("total_buckets", "total_objects", "total_size", "buckets", "storage_usage"):
            assert field in body
        assert body["buckets"]["models"] == {
            "objects": 1,
            "size": "2.0 KB",
            "size_bytes": 2048,
            "versions": 1,
            "versions_size_bytes": 2048,
        }
        usage = body["storage_usage"]
        if settings.storage_type == "local":
            assert usage["free_space_bytes"] > 0 and 0 <= usage["usage_percentage"] <= 100
        else:  # an S3 engine does not tell its capacity
            assert usage["free_space_bytes"] is None and usage["usage_percentage"] is None


async def test_health_routes(client: httpx.AsyncClient, settings: Settings) -> None:
    body = (await client.get("/health")).json()
    assert body["status"] == "healthy" and body["service"] == "storage"
    assert body["minio_connected"] is True
    assert body["buckets_available"] >= 6 and body["total_objects"] == 0
    body = (await client.get("/api/v1/storage/health")).json()
    assert body["blob_store"]["type"] == settings.storage_type
    assert body["index"]["backend"] == "sqlite"
    detailed = (await client.get("/api/v1/health/detailed")).json()
    assert set(detailed["checks"]) == {
        "index",
        "blob_store",
        "disk_space",
        "response_time",
        "integrity",
    }
    assert detailed["checks"]["integrity"]["ok"] is True
    assert all(c["ok"] for c in detailed["checks"].values())


async def test_metrics_move(client: httpx.AsyncClient) -> None:
    await client.put("/api/v1/objects/models/a.pt", content=b"x")
    await client.get("/api/v1/download/models/a.pt")
    await client.get("/api/v1/download/models/missing.pt")
    metrics = (await client.get("/api/v1/storage/metrics")).json()["metrics"]
    assert metrics["storage_uploads_total"]["bucket=models"] == 1
    assert metrics["storage_downloads_total"]["bucket=models"] == 1
    assert metrics["storage_errors_total"]["code=NoSuchKey"] == 1
    text = (await client.get("/metrics")).text
    assert 'storage_uploads_total{bucket="models"} 1.0' in text
    assert 'storage_usage_bytes{bucket="models"} 1.0' in text


async def test_legacy_upload_and_download(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/upload", files={"file": ("report.txt", b"legacy")}, data={"bucket": "models"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["bucket"] == "tensorfleet" and r.json()["key"] == "report.txt"
    r = await client.get("/download/report.txt")
    assert r.status_code == 200 and r.content == b"legacy"
    assert_error(await client.get("/download/nothing.txt"), 404, "NoSuchKey")


async def test_openapi_describes_streamed_bodies(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    put = spec["paths"]["/api/v1/objects/{bucket}/{key}"]["put"]
    assert "application/octet-stream" in put["requestBody"]["content"]
    form = spec["paths"]["/api/v1/files/upload"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in form
    assert (await client.get("/docs")).status_code == 200


def _depends_on_caller(dependant: object) -> bool:
    stack = [dependant]
    while stack:
        d = stack.pop()
        if getattr(d, "call", None) is get_caller:
            return True
        stack.extend(getattr(d, "dependencies", []))
    return False


def api_routes(routes: list[object]) -> list[APIRoute]:
    """Every APIRoute, descending into included routers (FastAPI wraps them)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found.extend(api_routes(router.routes))
    return found


# The hot routes resolve the caller in their body (deps.storage_and_caller), without
# FastAPI's dependency solving; the next test checks that they refuse anonymous callers.
_RESOLVE_IN_BODY = {objects.put_object, objects.download}


async def test_every_route_resolves_the_caller(app: FastAPI) -> None:
    routes = api_routes(list(app.routes))
    assert len(routes) >= 25
    missing = [
        r.path
        for r in routes
        if not _depends_on_caller(r.dependant) and r.endpoint not in _RESOLVE_IN_BODY
    ]
    assert missing == []
    assert {r.endpoint for r in routes} >= _RESOLVE_IN_BODY
    paths = {r.path for r in routes}
    assert {"/upload", "/download/{filename:objkey}", "/health", "/metrics"} <= paths


async def test_the_routes_that_resolve_the_caller_themselves_refuse_anonymous_callers(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    assert (await client.post("/api/v1/buckets", json={"name": "private"})).status_code == 201
    assert (await client.put("/api/v1/objects/private/a.txt", content=b"a")).status_code == 200
    for method in ("PUT", "GET", "HEAD"):
        path = (
            "/api/v1/objects/private/b.txt" if method == "PUT" else "/api/v1/download/private/a.txt"
        )
        r = await anon.request(method, path, content=b"b" if method == "PUT" else None)
        assert r.status_code == 401, (method, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
        bad = await anon.request(method, path, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401, (method, bad.status_code)
    assert (await client.get("/api/v1/download/private/b.txt")).status_code == 404


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing"), 404, "NotFound")
    assert_error(await client.patch("/api/v1/buckets"), 405, "MethodNotAllowed")
