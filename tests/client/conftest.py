"""The SDK against the real app: in-process (ASGI) for most tests, a real `tfstorage
serve` subprocess (tests/server's ServerProcess) where sockets, kills or a proxy matter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.server.conftest import ADMIN_TOKEN, make_server  # noqa: F401  (fixture)
from tfstorage.api.app import create_app
from tfstorage.client import AsyncClient
from tfstorage.config import Settings

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _isolated_client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's config file, tokens or resume state."""
    for name in ("TFSTORAGE_URL", "TFSTORAGE_TOKEN", "TFSTORAGE_CONFIG", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TFSTORAGE_STATE_DIR", raising=False)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        max_file_size=64 * MiB,
        gc_interval_seconds=0,
        admin_token=ADMIN_TOKEN,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def _transport(app: FastAPI) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=app, raise_app_exceptions=False)


@pytest.fixture
async def sdk(app: FastAPI, tmp_path: Path) -> AsyncIterator[AsyncClient]:
    """An AsyncClient on the in-process app, with small parts so multipart is cheap."""
    async with AsyncClient(
        "http://testserver",
        ADMIN_TOKEN,
        transport=_transport(app),
        part_size=5 * MiB,
        multipart_threshold=6 * MiB,
        retries=1,
        state_dir=tmp_path / "state",
    ) as c:
        yield c
