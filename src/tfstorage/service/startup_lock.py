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
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

STARTUP_LOCK = ".startup.lock"  # in DATA_DIR


@contextlib.asynccontextmanager
async def startup_lock(data_dir: Path) -> AsyncIterator[None]:
    """An exclusive flock on DATA_DIR/.startup.lock (made if missing), held for the
    block; waited for in a thread, so the event loop runs on meanwhile."""
    fd = os.open(data_dir / STARTUP_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await anyio.to_thread.run_sync(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets go of the lock
