"""The `tfstorage` command as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.conftest import ADMIN_TOKEN, make_server  # noqa: F401  (fixture)


def cli_env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: the server, the admin token, and a private config,
    cache (resume state) and DATA_DIR, whatever the developer's shell has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSTORAGE_")}
    env.update(
        TFSTORAGE_URL=url,
        TFSTORAGE_TOKEN=ADMIN_TOKEN,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        DATA_DIR=str(tmp_path / "no-data-dir"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def tfs(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfstorage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
