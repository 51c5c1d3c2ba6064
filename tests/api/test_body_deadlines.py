"""Body deadlines in-process (the real-server tests are in tests/server/test_slow_clients.py):
one middleware times every body, JSON or streamed, idle or merely slow."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.api.conftest import ADMIN, assert_error, make_settings, stored_files
from tfstorage.api.app import create_app
from tfstorage.service.backends import build_blob_store

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


class _SlowToStore:
    """A real blob store that takes each chunk 0.4 s late (a loaded disk or engine)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def put(self, blob_id: str, chunks: AsyncIterable[bytes]) -> int:
        async def late() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                await anyio.sleep(0.4)
                yield chunk

        return int(await self._inner.put(blob_id, late()))


async def test_time_spent_storing_is_not_the_clients(tmp_path: Path) -> None:
    # 3 prompt MiB take 1.2 s to store; at 10 MB/s after 0.3 s of grace the client would
    # be "too slow" if the service's own time counted.
    settings = make_settings(tmp_path, body_min_rate=10_000_000, body_grace_seconds=0.3)
    app = create_app(settings, blobs=_SlowToStore(build_blob_store(settings)))

    async def prompt() -> AsyncIterator[bytes]:
        for _ in range(3):
            await anyio.sleep(0.01)  # the network: each chunk is waited for, briefly
            yield b"p" * 1024 * 1024

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            r = await c.put("/api/v1/objects/artifacts/stored-slowly.bin", content=prompt())
            assert r.status_code == 200, r.text
            assert r.json()["size"] == 3 * 1024 * 1024
