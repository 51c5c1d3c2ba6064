"""The lock the workers of an instance take in turn at start-up (service/startup_lock.py)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from tfstorage.service import startup_lock as module
from tfstorage.service.startup_lock import STARTUP_LOCK, startup_lock

pytestmark = pytest.mark.anyio


def _held_elsewhere(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


async def test_the_lock_is_held_for_the_block_and_let_go_after(tmp_path: Path) -> None:
    async with startup_lock(tmp_path):
        assert _held_elsewhere(tmp_path / STARTUP_LOCK)
    assert not _held_elsewhere(tmp_path / STARTUP_LOCK)


def _refuse_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read-only DATA_DIR answers (the tests run as root, whom modes do not stop)."""
    real_open = os.open

    def refusing(path: str | Path, flags: int, *args: int) -> int:
        if flags & (os.O_CREAT | os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(module.os, "open", refusing)


async def test_a_read_only_data_dir_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lock file and none can be made: the block runs (an instance on PostgreSQL and
    S3 with its secrets in the environment writes nothing there)."""
    _refuse_writes(monkeypatch)
    ran = False
    async with startup_lock(tmp_path):
        ran = True
    assert ran and not (tmp_path / STARTUP_LOCK).exists()


async def test_a_lock_file_in_a_read_only_data_dir_is_still_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / STARTUP_LOCK).touch()  # left by a start when DATA_DIR was writable
    _refuse_writes(monkeypatch)
    async with startup_lock(tmp_path):
        monkeypatch.undo()
        assert _held_elsewhere(tmp_path / STARTUP_LOCK)
