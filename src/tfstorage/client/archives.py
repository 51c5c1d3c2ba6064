"""Fetching many small objects at once: one streamed tar of the prefix
(`GET /api/v1/archive/{bucket}?prefix=&format=tar`), unpacked as it arrives.

Each entry is written only if its size and SHA-256 match the listing's; what the archive
lacks or gets wrong (a key renamed by the server's name cleaning, a newer version, a cut
stream) is left to the caller, which fetches those one by one."""

from __future__ import annotations

import hashlib
import io
import os
import queue
import tarfile
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.from_thread

from tfstorage.client._http import Http
from tfstorage.client.errors import TFStorageError
from tfstorage.client.models import ObjectInfo

_END = b""
Wanted = dict[str, tuple[ObjectInfo, Path]]  # entry name -> (object, destination)


class _QueueReader(io.RawIOBase):
    """A blocking file over chunks that the event loop puts into a queue."""

    def __init__(self, chunks: queue.Queue[bytes | BaseException]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer and not self._done:
            item = self._chunks.get()
            if isinstance(item, BaseException):
                raise item
            if item == _END:
                self._done = True
            self._buffer = memoryview(item)
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _unpack(
    reader: _QueueReader, wanted: Wanted, report: Callable[[list[tuple[str, int]]], None]
) -> set[str]:
    """Write each wanted, verified entry; returns the keys written."""
    written: set[str] = set()
    pending: list[tuple[str, int]] = []
    with tarfile.open(fileobj=io.BufferedReader(reader, 1024 * 1024), mode="r|") as tar:
        for member in tar:
            item = wanted.get(member.name)
            if item is None or not member.isfile():
                continue
            obj, dest = item
            source = tar.extractfile(member)
            if source is None or member.size != obj.size:
                continue
            data = source.read()
            if hashlib.sha256(data).hexdigest() != obj.sha256:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tfs-partial")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            written.add(obj.key)
            pending.append((obj.key, obj.size))
            if len(pending) >= 64:
                report(pending)
                pending = []
    if pending:
        report(pending)
    return written


async def fetch_archive(
    http: Http,
    bucket: str,
    prefix: str,
    wanted: Wanted,
    on_written: Callable[[list[tuple[str, int]]], None],
) -> set[str]:
    """Unpack the prefix's tar into the wanted destinations; the keys written. Any
    failure of the archive itself ends it quietly: the rest is for the caller."""
    chunks: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=32)
    reader = _QueueReader(chunks)
    stopped = False

    def put(item: bytes | BaseException) -> bool:
        """Hand a chunk to the unpacking thread; False once it has stopped reading."""
        while not stopped:
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def report(batch: list[tuple[str, int]]) -> None:
        anyio.from_thread.run_sync(on_written, batch)

    written: set[str] = set()

    async def unpack() -> None:
        nonlocal stopped
        try:
            written.update(await anyio.to_thread.run_sync(_unpack, reader, wanted, report))
        except (tarfile.TarError, OSError, TFStorageError):
            pass
        finally:
            stopped = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(unpack)
        try:
            params = {"prefix": prefix, "format": "tar"}
            identity = {"Accept-Encoding": "identity"}  # raw bytes are read: no gzip
            async with http.stream(
                "GET", f"/api/v1/archive/{bucket}", params=params, headers=identity
            ) as r:
                async for chunk in r.aiter_raw(256 * 1024):
                    if chunk and not await anyio.to_thread.run_sync(put, chunk):
                        break
            await anyio.to_thread.run_sync(put, _END)
        except TFStorageError as exc:
            await anyio.to_thread.run_sync(put, exc)
    return written
