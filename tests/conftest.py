from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfstorage.config import Settings

# SeaweedFS (a real S3 server) and the fault-injecting proxy, for the S3 backend's tests.
pytest_plugins = ["tests.s3.fixtures"]

# What the SDK and CLI read besides the service's settings (tfstorage.client.config and
# the resume state of tfstorage.client), and what boto3 would pick up from a user's shell.
_CLIENT_VARS = ("TFSTORAGE_URL", "TFSTORAGE_TOKEN", "TFSTORAGE_CONFIG", "TFSTORAGE_STATE_DIR")
_USER_VARS = (
    "PROMETHEUS_MULTIPROC_DIR",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def _service_vars() -> set[str]:
    # Every Settings field is an environment variable of the same name: derived, so a
    # new setting cannot leak from the developer's shell into in-process apps.
    return {name.upper() for name in Settings.model_fields}


@pytest.fixture(autouse=True, scope="session")
def _isolated_from_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite never reads or writes a user's state: not the checkout's `./data` (where
    `make serve` writes `data/admin.token`), not `~/.config/tfstorage`, not the resume
    state under `~/.cache`, not TFSTORAGE_*/service variables of the shell that runs it.

    The working directory becomes an empty temporary one (a relative `./data`, the
    default DATA_DIR of server and client alike, then names nothing of the checkout),
    and HOME, the XDG directories and DATA_DIR point into another one. Tests that need
    a variable set it themselves (monkeypatch, or the env of a subprocess)."""
    root = tmp_path_factory.mktemp("user-state")
    home, cwd = root / "home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        cleared = _service_vars() | set(_CLIENT_VARS) | set(_USER_VARS)
        for name in list(os.environ):
            if name.upper() in cleared or name.upper().startswith("TFSTORAGE_"):
                mp.delenv(name)
        if pythonpath := os.environ.get("PYTHONPATH"):
            # Subprocesses (`python -m tfstorage`) must find the same code after chdir.
            absolute = [str(Path(p).resolve()) for p in pythonpath.split(os.pathsep) if p]
            mp.setenv("PYTHONPATH", os.pathsep.join(absolute))
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        mp.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
        mp.setenv("DATA_DIR", str(root / "data"))
        mp.chdir(cwd)
        yield root


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
