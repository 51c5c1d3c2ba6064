"""The usage counters over HTTP: check, repair, and the figures that read them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN, assert_error, make_settings
from tests.api.test_access import bearer, new_token
from tfstorage.api.app import create_app
from tfstorage.index.tables import usage_counters

pytestmark = pytest.mark.anyio


@pytest.fixture
async def local_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def admin(local_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=local_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=ADMIN
    ) as c:
        yield c


async def test_check_and_repair(local_app: FastAPI, admin: httpx.AsyncClient) -> None:
    for key, body in (("models/a.bin", b"abc"), ("models/a.bin", b"abcdef"), ("jobs/x", b"1")):
        assert (await admin.put(f"/api/v1/objects/{key}", content=body)).status_code == 200
    check = (await admin.get("/api/v1/storage/counters")).json()
    assert check["ok"] and check["differences"] == [] and not check["repaired"]

    # Damage them behind the service's back: the check names the bucket and figure.
    engine = local_app.state.storage.ctx.index.engine
    with engine.begin() as conn:
        conn.execute(usage_counters.update().values(bytes=usage_counters.c.bytes + 100))
    stats = (await admin.get("/api/v1/stats")).json()
    assert stats["buckets"]["models"]["size_bytes"] == 106  # the counters are what it reads
    check = (await admin.get("/api/v1/storage/counters")).json()
    assert not check["ok"]
    wrong = {
        (d["bucket"], d["counted"]["bytes"], d["actual"]["bytes"]) for d in check["differences"]
    }
    assert ("models", 106, 6) in wrong

    repaired = (await admin.post("/api/v1/storage/counters/repair")).json()
    assert repaired["repaired"] and repaired["differences"] == check["differences"]
    assert (await admin.get("/api/v1/storage/counters")).json()["ok"]
    stats = (await admin.get("/api/v1/stats")).json()
    assert stats["buckets"]["models"]["size_bytes"] == 6
    assert stats["total_objects"] == 2
    listed = {b["name"]: b for b in (await admin.get("/api/v1/buckets")).json()["buckets"]}
    assert listed["models"]["objects"] == 1
    entries = (await admin.get("/api/v1/audit")).json()["entries"]
    assert [e["action"] for e in entries].count("repair_counters") == 1


async def test_counters_need_admin(admin: httpx.AsyncClient, local_app: FastAPI) -> None:
    reader = bearer(await new_token(admin, name="r", scopes=["read"]))
    assert_error(await admin.get("/api/v1/storage/counters", headers=reader), 403, "AccessDenied")
    r = await admin.post("/api/v1/storage/counters/repair", headers=reader)
    assert_error(r, 403, "AccessDenied")
    transport = httpx.ASGITransport(app=local_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anon:
        assert_error(await anon.get("/api/v1/storage/counters"), 401, "Unauthenticated")
