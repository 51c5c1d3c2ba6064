"""Downloading one object version into a file, resumably, verified.

Bytes go into a partial file beside the destination (`.NAME.tfs-partial`, with a small
`.json` sidecar naming the version). An interrupted transfer keeps it; the next attempt
(a retry in the same call, or a later run) asks for the rest with `Range` on the
version's `file_id`, whose bytes never change. The SHA-256 of the whole file (the kept
prefix re-hashed, then the new bytes as they arrive) must equal the server's
`X-Checksum-SHA256` and the length its size; otherwise the partial file is removed and
`ChecksumMismatch` raised. Only a verified file is renamed to the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tfstorage.client._http import Http, object_path
from tfstorage.client.errors import (
    ChecksumMismatch,
    IncompleteDownload,
    TFStorageError,
    TransportError,
)
from tfstorage.client.models import ProgressCallback

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Version:
    """What a download needs to know about the bytes it fetches."""

    file_id: str
    size: int
    sha256: str


def partial_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.tfs-partial")


def _sidecar(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def _prefix_sha256(path: Path, length: int) -> Any:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        remaining = length
        while remaining and (block := f.read(min(4 * _CHUNK, remaining))):
            digest.update(block)
            remaining -= len(block)
    return digest


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _sidecar(partial).unlink(missing_ok=True)


async def resolve(http: Http, bucket: str, key: str, version_id: str | None) -> Version:
    params = {"version_id": version_id} if version_id else {}
    path = object_path("download", bucket, key)
    try:
        head = await http.request("HEAD", path, params=params)
    except TFStorageError as exc:
        if exc.status < 400 or exc.status >= 500:
            raise
        # A HEAD answer has no body, so no error code: ask again with a GET, whose
        # error body names it (NoSuchKey, NoSuchBucket, AccessDenied, ...).
        async with http.stream("GET", path, params=params):
            pass
        raise
    return Version(
        file_id=head.headers["x-file-id"],
        size=int(head.headers["content-length"]),
        sha256=head.headers["x-checksum-sha256"],
    )


async def fetch(
    http: Http,
    version: Version,
    dest: Path,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = True,
) -> None:
    """Download `version` into `dest` (see the module's docstring)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    sidecar = _sidecar(partial)
    offset = 0
    if resume and partial.exists():
        try:
            recorded = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            recorded = {}
        if recorded.get("file_id") == version.file_id and recorded.get("sha256") == version.sha256:
            offset = min(partial.stat().st_size, version.size)
    if offset == 0:
        _discard(partial)
    if resume:
        sidecar.write_text(json.dumps({"file_id": version.file_id, "sha256": version.sha256}))
    digest = (
        await anyio.to_thread.run_sync(_prefix_sha256, partial, offset)
        if offset
        else hashlib.sha256()
    )
    if offset and progress is not None:
        progress(offset)

    attempt = 0
    with partial.open("r+b" if offset else "wb") as out:
        out.truncate(offset)
        out.seek(offset)
        sink = _Sink(out, digest, offset)
        while sink.offset < version.size:
            try:
                await _receive(http, version, sink, progress)
                offset = sink.offset
                if offset < version.size:
                    raise TransportError(f"the server sent {offset} of {version.size} bytes")
            except ChecksumMismatch:
                out.close()
                _discard(partial)
                raise
            except TFStorageError as exc:
                offset = sink.offset
                if attempt >= http.retries or not http.retryable(exc):
                    out.close()
                    if not resume:
                        _discard(partial)
                    if isinstance(exc, TransportError):
                        raise IncompleteDownload(
                            f"{dest.name}: {offset} of {version.size} bytes received "
                            f"({exc.message}); run again to resume"
                        ) from exc
                    raise
                await http.backoff(attempt, exc.retry_after)
                attempt += 1
        offset = sink.offset
        out.flush()
        if resume:  # big files; small ones (directory copies) are not fsynced, as cp(1)
            os.fsync(out.fileno())

    if offset != version.size or digest.hexdigest() != version.sha256:
        _discard(partial)
        raise ChecksumMismatch(
            f"{dest.name}: received {offset} bytes with sha256 {digest.hexdigest()}, expected "
            f"{version.size} bytes with sha256 {version.sha256}; nothing was saved"
        )
    os.replace(partial, dest)
    sidecar.unlink(missing_ok=True)
    if not resume:
        return
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Sink:
    """The partial file, the running SHA-256 and how many bytes are in both."""

    def __init__(self, out: Any, digest: Any, offset: int) -> None:
        self.out = out
        self.digest = digest
        self.offset = offset

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.digest.update(chunk)
        self.offset += len(chunk)


async def _receive(
    http: Http, version: Version, sink: _Sink, progress: ProgressCallback | None
) -> None:
    """One GET from `sink.offset`; bytes are written and counted as they come, so an
    interruption leaves `sink` exactly where the next attempt starts."""
    offset = sink.offset
    # The bytes as stored (what the SHA-256 and `Range` offsets are about): a proxy that
    # compresses answers must not hand back gzip, which `aiter_raw` would save as is.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    path = f"/api/v1/files/download/{version.file_id}"
    async with http.stream("GET", path, headers=headers) as r:
        if offset and r.status_code != 206:
            raise ChecksumMismatch(f"the server ignored Range (answered {r.status_code})")
        async for chunk in r.aiter_raw(_CHUNK):
            if sink.offset + len(chunk) > version.size:
                raise ChecksumMismatch(f"the server sent more than {version.size} bytes")
            await anyio.to_thread.run_sync(sink.write, chunk)
            if progress is not None:
                progress(len(chunk))
