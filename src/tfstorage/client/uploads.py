"""Uploading one file: a raw PUT below the multipart threshold, else a resumable
multipart upload.

A multipart upload records its session id in a local state file keyed by the file's
absolute path, size and mtime and by the target (server, bucket, key), so that a run
that was killed resumes where it stopped: it asks the server which parts it holds,
checks each against the local bytes (the part's SHA-256) and sends only the others.
The whole file's SHA-256 is sent with `complete`, which the server verifies before the
object becomes visible, and compared again with the server's answer; should it differ,
the parts are compared one by one and the wrong ones sent again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from tfstorage.client._http import Http, first_error, object_path
from tfstorage.client.errors import (
    BadDigest,
    ChecksumMismatch,
    InvalidArgument,
    NoSuchUpload,
    TFStorageError,
)
from tfstorage.client.models import ProgressCallback

MiB = 1024 * 1024
_CHUNK = MiB


@dataclass(frozen=True)
class UploadOptions:
    """`part_size` and `concurrency` (parts in flight) of multipart uploads, used for
    files of at least `multipart_threshold` bytes; `state_dir` holds resume state."""

    part_size: int = 16 * MiB
    multipart_threshold: int = 32 * MiB
    concurrency: int = 4
    state_dir: Path | None = None


def default_state_dir() -> Path:
    """`TFSTORAGE_STATE_DIR`, else `$XDG_CACHE_HOME/tfstorage/uploads` (~/.cache/...)."""
    if explicit := os.environ.get("TFSTORAGE_STATE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tfstorage" / "uploads"


class UploadState:
    """The state file of one (local file version, target) pair."""

    def __init__(self, directory: Path, path: Path, st: os.stat_result, target: str) -> None:
        identity = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, target])
        self.path = directory / f"{hashlib.sha256(identity.encode()).hexdigest()[:40]}.json"

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("upload_id"), str) else None

    def save(self, upload_id: str, part_size: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        record = {"upload_id": upload_id, "part_size": part_size, "saved_at": time.time()}
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def _read_part(path: Path, offset: int, length: int, digest: bool) -> tuple[bytes, str | None]:
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise ChecksumMismatch(f"{path} changed while it was being uploaded")
    return data, hashlib.sha256(data).hexdigest() if digest else None


def _tags_header(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in tags.items())


async def _file_chunks(path: Path, progress: _Counter) -> AsyncIterator[bytes]:
    progress.restart()
    f = await anyio.open_file(path, "rb")
    async with f:
        while chunk := await f.read(_CHUNK):
            progress.add(len(chunk))
            yield chunk


async def _slices(data: bytes, progress: _Counter) -> AsyncIterator[bytes]:
    """A part in memory, sent in pieces so that progress moves as it goes."""
    progress.restart()
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        piece = bytes(view[start : start + _CHUNK])
        yield piece
        progress.add(len(piece))


class _Counter:
    """Progress of one request that may be retried: a retry takes back what it sent."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.sent = 0

    def add(self, n: int) -> None:
        self.sent += n
        if self.callback is not None:
            self.callback(n)

    def restart(self) -> None:
        if self.sent and self.callback is not None:
            self.callback(-self.sent)
        self.sent = 0


async def put_file(
    http: Http,
    path: Path,
    bucket: str,
    key: str,
    *,
    content_type: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """One raw PUT, streamed from the file, with its SHA-256 for the server to check."""
    sha256 = await anyio.to_thread.run_sync(file_sha256, path)
    size = path.stat().st_size
    headers = {"Content-Length": str(size), "X-Checksum-SHA256": sha256}
    if content_type:
        headers["Content-Type"] = content_type
    if metadata:
        headers["X-Metadata"] = json.dumps(metadata)
    if tags:
        headers["X-Tags"] = _tags_header(tags)
    counter = _Counter(progress)
    body: dict[str, Any] = await http.json(
        "PUT",
        object_path("objects", bucket, key),
        headers=headers,
        body=lambda: _file_chunks(path, counter),
    )
    _check_result(body, sha256, size)
    return body


def _check_result(body: dict[str, Any], sha256: str, size: int) -> None:
    if body.get("sha256") != sha256 or body.get("size") != size:
        raise ChecksumMismatch(
            f"the server stored sha256 {body.get('sha256')} ({body.get('size')} bytes); "
            f"the local file has {sha256} ({size} bytes)"
        )


def _part_size(size: int, wanted: int, session: dict[str, Any]) -> int:
    low = int(session.get("min_part_size") or 5 * MiB)
    high = int(session.get("max_part_size") or 5 * 1024 * MiB)
    most = int(session.get("max_parts") or 10_000)
    return min(high, max(wanted, low, math.ceil(size / most)))


async def multipart_upload(
    http: Http,
    path: Path,
    bucket: str,
    key: str,
    *,
    options: UploadOptions,
    content_type: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    progress: ProgressCallback | None = None,
    upload_id: str | None = None,
) -> dict[str, Any]:
    """A resumable multipart upload (see the module's docstring)."""
    st = path.stat()
    size = st.st_size
    state = UploadState(
        options.state_dir or default_state_dir(), path, st, f"{http.url}|{bucket}|{key}"
    )
    saved = state.load()
    part_size = int(saved["part_size"]) if saved and upload_id is None else 0
    upload_id = upload_id or (saved["upload_id"] if saved else None)

    session: dict[str, Any] | None = None
    if upload_id is not None:
        try:
            session = await http.json("GET", f"/api/v1/uploads/{upload_id}")
        except NoSuchUpload:
            state.remove()  # expired or completed meanwhile: start again
        if session is not None and (session.get("bucket"), session.get("key")) != (bucket, key):
            raise InvalidArgument(
                f"upload {upload_id} is for {session.get('bucket')}/{session.get('key')}"
            )
    if session is None:
        request: dict[str, Any] = {"bucket": bucket, "key": key, "size": size}
        if content_type:
            request["content_type"] = content_type
        if metadata:
            request["metadata"] = metadata
        if tags:
            request["tags"] = tags
        session = await http.json("POST", "/api/v1/uploads", json=request, idempotent=False)
        part_size = _part_size(size, options.part_size, session)
        state.save(session["upload_id"], part_size)
    stored = {int(p["part_number"]): p for p in session.get("parts", [])}
    if not part_size:  # resuming from an upload id alone: the parts tell their size
        first = stored.get(1)
        part_size = int(first["size"]) if first else _part_size(size, options.part_size, session)
        state.save(session["upload_id"], part_size)
    upload = session["upload_id"]

    count = max(1, math.ceil(size / part_size))
    etags: dict[int, str] = {}
    numbers = iter(range(1, count + 1))
    whole: dict[str, str] = {}

    async def send(n: int, verify: bool = False) -> None:
        """Part `n`, unless the server holds it with the local bytes' SHA-256. A new part
        is hashed only with `verify`: the whole file's SHA-256, checked by `complete`,
        covers every part, and saves a hashing pass on the cores the server uses too."""
        offset = (n - 1) * part_size
        length = min(part_size, size - offset)
        known = stored.pop(n, None)
        check = verify or known is not None
        data, sha256 = await anyio.to_thread.run_sync(_read_part, path, offset, length, check)
        if known is None or int(known["size"]) != length or known.get("sha256") != sha256:
            counter = _Counter(progress)
            headers = {"Content-Length": str(length), "Content-Type": "application/octet-stream"}
            if sha256 is not None:
                headers["X-Checksum-SHA256"] = sha256  # the server refuses a part that differs
            known = await http.json(
                "PUT",
                f"/api/v1/uploads/{upload}/parts/{n}",
                body=lambda: _slices(data, counter),
                headers=headers,
            )
            if sha256 is not None and known.get("sha256") != sha256:
                raise ChecksumMismatch(f"part {n}: the server stored sha256 {known.get('sha256')}")
        elif progress is not None:
            progress(length)  # already on the server, and checked
        etags[n] = known["etag"]

    async def worker() -> None:
        for n in numbers:  # one shared iterator: each part goes to exactly one worker
            await send(n)

    async def hash_whole() -> None:
        whole["sha256"] = await anyio.to_thread.run_sync(file_sha256, path, abandon_on_cancel=True)

    with first_error():
        async with anyio.create_task_group() as tg:
            tg.start_soon(hash_whole)
            for _ in range(min(options.concurrency, count)):
                tg.start_soon(worker)

    sha256 = whole["sha256"]
    try:
        body = await _complete(
            http, upload, [(n, etags[n]) for n in sorted(etags)], sha256, bucket, key
        )
    except BadDigest:
        # A part went wrong on the way: find it by the parts' SHA-256, send it again
        # (verified this time), and complete once more.
        session = await http.json("GET", f"/api/v1/uploads/{upload}")
        stored = {int(p["part_number"]): p for p in session.get("parts", [])}
        for n in range(1, count + 1):
            await send(n, verify=True)
        body = await _complete(
            http, upload, [(n, etags[n]) for n in sorted(etags)], sha256, bucket, key
        )
    _check_result(body, sha256, size)
    state.remove()
    return body


async def _complete(
    http: Http, upload: str, parts: list[tuple[int, str]], sha256: str, bucket: str, key: str
) -> dict[str, Any]:
    """Complete; if an answer was lost and a retry finds the session gone, the object
    in place is accepted when its SHA-256 is ours."""
    payload = {"parts": [{"part_number": n, "etag": e} for n, e in parts], "sha256": sha256}
    attempt = 0
    while True:
        try:
            result: dict[str, Any] = await http.json(
                "POST", f"/api/v1/uploads/{upload}/complete", json=payload, idempotent=False
            )
            return result
        except NoSuchUpload:
            if attempt == 0:
                raise
            head = await http.request("HEAD", object_path("download", bucket, key))
            if head.headers.get("x-checksum-sha256") != sha256:
                raise
            info: dict[str, Any] = await http.json(
                "GET", f"/api/v1/files/{head.headers['x-file-id']}"
            )
            return info
        except TFStorageError as exc:
            if attempt >= http.retries or not http.retryable(exc):
                raise
            await http.backoff(attempt, exc.retry_after)
            attempt += 1
