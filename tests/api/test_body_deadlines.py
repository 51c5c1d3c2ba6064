"""Body deadlines in-process (the real-server tests are in tests/server/test_slow_clients.py):
one middleware times every body, JSON or streamed, idle or merely slow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.api.conftest import ADMIN, assert_error, make_settings, stored_files
from tfstorage.api.app import create_app

pytestmark = pytest.mark.anyio


async def _dawdling(first: bytes, rest: bytes, pause: float) -> AsyncIterator[bytes]:
    yield first
    await anyio.sleep(pause)
    yield rest


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"body_timeout_seconds": 0.3}, "no body bytes received for 0.3 seconds"),
        (
            {"body_min_rate": 1000, "body_grace_seconds": 0.3},
            "the body arrived slower than 1000 bytes/s",
        ),
    ],
    ids=["idle", "rate"],
)
async def test_a_stalled_body_gets_408_with_connection_close(
    tmp_path: Path, overrides: dict[str, object], why: str
) -> None:
    settings = make_settings(tmp_path, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            # A JSON body, read whole before the route runs.
            r = await c.post(
                "/api/v1/buckets",
                content=_dawdling(b'{"name": "late', b'-bucket"}', 1.0),
                headers={"Content-Type": "application/json"},
            )
            assert_error(r, 408, "RequestTimeout")
            assert why in r.json()["error"]
            assert r.headers["connection"] == "close"
            assert (await c.get("/api/v1/buckets/late-bucket")).status_code == 404
            # A streamed upload: nothing is stored.
            r = await c.put(
                "/api/v1/objects/artifacts/late.bin", content=_dawdling(b"x" * 100, b"y", 1.0)
            )
            assert_error(r, 408, "RequestTimeout")
            assert r.headers["connection"] == "close"
            assert (await c.get("/api/v1/download/artifacts/late.bin")).status_code == 404
            # A prompt body is served.
            r = await c.put("/api/v1/objects/artifacts/prompt.bin", content=b"z" * 5000)
            assert r.status_code == 200, r.text
    assert len(stored_files(settings)) == 1
