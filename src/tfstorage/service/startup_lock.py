"""One worker process of an instance at a time through the start-up steps that read,
then make, files in DATA_DIR or rows every worker would otherwise make too.

uvicorn's worker processes start together. On a first start each found no admin token
and made its own (with ADMIN_TOKEN, the second insert failed on the unique secret hash,
and uvicorn's supervisor stops the whole server when a worker fails its start-up); an
older release's replica journal file was read by one worker while the other deleted it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

STARTUP_LOCK = ".startup.lock"  # in DATA_DIR
log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def startup_lock(data_dir: Path) -> AsyncIterator[None]:
    """An exclusive flock on DATA_DIR/.startup.lock (made if missing), held for the
    block; waited for in a thread, so the event loop runs on meanwhile.

    A DATA_DIR this process cannot write (an instance on PostgreSQL and S3 whose admin
    token and keys come from the environment) still starts: the lock is taken on the
    file opened read-only where it exists, and skipped where it cannot be made. Nothing
    is made in such a DATA_DIR then, and the admin token's INSERT tolerates a race."""
    path = data_dir / STARTUP_LOCK
    fd = _open(path)
    if fd is None:
        log.debug("no %s (DATA_DIR is read-only): start-up steps run unserialised", path)
        yield
        return
    try:
        await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets go of the lock


def _open(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            return os.open(path, os.O_RDONLY)  # flock needs no write access
        except OSError:
            return None
