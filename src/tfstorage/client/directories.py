"""Directory transfers: a local tree to a prefix and back, concurrently.

Uploads send small files in batches (one multipart form of up to `BATCH_FILES` files
and `BATCH_BYTES` bytes per request, files of one directory per form since the form's
`prefix` applies to file names) and big ones through `upload_file`. Every stored file's
SHA-256 is compared with the local one. With `skip_existing`, files whose remote copy
has the same size and SHA-256 are not sent (or fetched) again.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio

from tfstorage.client._http import Http, first_error
from tfstorage.client.archives import fetch_archive
from tfstorage.client.downloads import Version, fetch
from tfstorage.client.errors import TFStorageError
from tfstorage.client.listing import iter_objects
from tfstorage.client.models import ObjectInfo, ProgressCallback, TransferReport
from tfstorage.client.uploads import file_sha256

BATCH_FILES = 100
BATCH_BYTES = 8 * 1024 * 1024
SMALL_FILE = 1024 * 1024
ARCHIVE_MIN_FILES = 100  # below this, a GET per file is as quick
# Names the server's form parser keeps exactly as sent (others go up one by one).
_FORM_SAFE = re.compile(
    r"[A-Za-z0-9._\-+=@,()~][A-Za-z0-9._\-+=@,()~ ]*[A-Za-z0-9._\-+=@,()~]|[A-Za-z0-9._\-+=@,()~]"
)

FileCallback = Callable[[str], None]
UploadOne = Callable[[Path, str, ProgressCallback | None], Awaitable[dict[str, Any]]]


@dataclass
class _LocalFile:
    path: Path
    rel: str
    size: int
    key: str


def local_files(root: Path) -> list[tuple[Path, str]]:
    """Regular files under `root`, with their '/'-separated relative paths, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            # An interrupted download's leftovers are not the user's files.
            if name.endswith(_PARTIAL_SUFFIXES):
                continue
            if path.is_file():
                found.append((path, path.relative_to(root).as_posix()))
    return found


def join_key(prefix: str, rel: str) -> str:
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + rel


def _hash_many(paths: list[Path]) -> list[str]:
    return [file_sha256(p) for p in paths]


def _build_form(bucket: str, prefix: str, files: list[_LocalFile]) -> tuple[str, bytes, list[str]]:
    boundary = f"tfs-{uuid.uuid4().hex}"
    out = bytearray()
    fields = {"bucket": bucket, **({"prefix": prefix} if prefix else {})}
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    digests = []
    for f in files:
        data = f.path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        digests.append(digest)
        name = PurePosixPath(f.rel).name
        # The part's own X-Checksum-SHA256: the server refuses a file damaged on the
        # way instead of storing it over the previous version.
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\nX-Checksum-SHA256: {digest}\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out), digests


def _batches(files: list[_LocalFile]) -> list[list[_LocalFile]]:
    by_dir: dict[str, list[_LocalFile]] = {}
    for f in files:
        by_dir.setdefault(f.key.rpartition("/")[0], []).append(f)
    batches: list[list[_LocalFile]] = []
    for group in by_dir.values():
        current: list[_LocalFile] = []
        size = 0
        for f in group:
            if current and (len(current) >= BATCH_FILES or size + f.size > BATCH_BYTES):
                batches.append(current)
                current, size = [], 0
            current.append(f)
            size += f.size
        if current:
            batches.append(current)
    return batches


async def upload_dir(
    http: Http,
    root: Path,
    bucket: str,
    prefix: str,
    *,
    upload_one: UploadOne,
    skip_existing: bool,
    concurrency: int,
    progress: ProgressCallback | None,
    on_file: FileCallback | None,
    planned: Callable[[int, int], None] | None = None,
) -> TransferReport:
    """Upload every file under `root` to `prefix` + its relative path."""
    files = [
        _LocalFile(path, rel, path.stat().st_size, join_key(prefix, rel))
        for path, rel in local_files(root)
    ]
    report = TransferReport()
    if skip_existing and files:
        remote = {o.key: o async for o in iter_objects(http, bucket, prefix)}
        same_size = [f for f in files if (r := remote.get(f.key)) is not None and r.size == f.size]
        digests = await anyio.to_thread.run_sync(_hash_many, [f.path for f in same_size])
        unchanged = {
            f.key for f, d in zip(same_size, digests, strict=True) if remote[f.key].sha256 == d
        }
        report.skipped = [f.key for f in files if f.key in unchanged]
        files = [f for f in files if f.key not in unchanged]
    if planned is not None:
        planned(len(files), sum(f.size for f in files))

    small = [
        f for f in files if f.size <= SMALL_FILE and _FORM_SAFE.fullmatch(PurePosixPath(f.rel).name)
    ]
    small_keys = {f.key for f in small}
    work: list[list[_LocalFile]] = _batches(small) + [[f] for f in files if f.key not in small_keys]

    async def one(f: _LocalFile) -> None:
        try:
            body = await upload_one(f.path, f.key, progress)
        except (TFStorageError, OSError) as exc:
            report.failed[f.key] = str(exc)
            return
        report.transferred.append(f.key)
        report.bytes += int(body.get("size", f.size))
        if on_file is not None:
            on_file(f.key)

    async def batch(group: list[_LocalFile]) -> None:
        form_prefix = group[0].key.rpartition("/")[0]
        try:
            content_type, body, digests = await anyio.to_thread.run_sync(
                _build_form, bucket, form_prefix, group
            )
            answer = await http.request(
                "POST", "/api/v1/files/upload", content=body,
                headers={"Content-Type": content_type}, idempotent=True,
            )  # fmt: skip
        except TFStorageError:
            for f in group:  # one by one, for each file's own outcome
                await one(f)
            return
        except OSError as exc:
            for f in group:
                report.failed[f.key] = str(exc)
            return
        stored = _stored_by_key(answer.json())
        for f, digest in zip(group, digests, strict=True):
            result = stored.get(f.key)
            if isinstance(result, str) or result is None:
                report.failed[f.key] = result or "the server did not report this file"
            elif result.get("sha256") != digest:
                report.failed[f.key] = f"stored sha256 {result.get('sha256')}, local {digest}"
            else:
                report.transferred.append(f.key)
                report.bytes += f.size
                if on_file is not None:
                    on_file(f.key)
        if progress is not None:
            progress(sum(f.size for f in group))

    items = iter(work)

    async def worker() -> None:
        for group in items:
            if len(group) == 1 and group[0].key not in small_keys:
                await one(group[0])
            else:
                await batch(group)

    with first_error():
        async with anyio.create_task_group() as tg:
            for _ in range(max(1, min(concurrency, len(work)))):
                tg.start_soon(worker)
    return report


def _stored_by_key(body: dict[str, Any]) -> dict[str, dict[str, Any] | str]:
    """key -> stored file, or the reason it failed (per-file results or all-or-nothing)."""
    out: dict[str, dict[str, Any] | str] = {}
    if isinstance(body.get("results"), list):
        for r in body["results"]:
            key = r.get("key") or (r.get("file") or {}).get("key")
            if not key:
                continue
            if r.get("file"):
                out[key] = r["file"]
            else:
                error = r.get("error")
                out[key] = (
                    f"{error.get('code')}: {error.get('error') or error.get('message')}"
                    if isinstance(error, dict)
                    else str(error or r.get("status") or "failed")
                )
        return out
    for f in body.get("files", []):
        out[f["key"]] = f
    return out


# Names the download itself uses beside a destination: a key ending so could be renamed
# over another file's partial bytes, or have them renamed over it.
_PARTIAL_SUFFIXES = (".tfs-partial", ".tfs-partial.json")


def _safe_dest(root: Path, rel: str) -> Path | None:
    """Where `rel` goes under `root`, or None. Each key needs a path of its own, so
    empty segments ("x//y" would land on "x/y") are refused, not collapsed."""
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in rel:
        return None
    if parts[-1].endswith(_PARTIAL_SUFFIXES):
        return None
    dest = root.joinpath(*parts)
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(dest)]) != base:
        return None
    return dest


def _matches_local(dest: Path, obj: ObjectInfo) -> bool:
    try:
        if dest.stat().st_size != obj.size:
            return False
    except OSError:
        return False
    return file_sha256(dest) == obj.sha256


async def download_prefix(
    http: Http,
    bucket: str,
    prefix: str,
    root: Path,
    *,
    skip_existing: bool,
    concurrency: int,
    progress: ProgressCallback | None,
    on_file: FileCallback | None,
    planned: Callable[[int, int], None] | None = None,
) -> TransferReport:
    """Download every object under `prefix` into `root` / (key without the prefix)."""
    report = TransferReport()
    todo: list[tuple[ObjectInfo, Path]] = []
    listed_bytes = 0
    async for obj in iter_objects(http, bucket, prefix):
        listed_bytes += obj.size
        rel = obj.key[len(prefix) :]
        if prefix and not prefix.endswith("/"):
            rel = rel.removeprefix("/")  # "run" + "/a": the separator, not a segment
        if obj.size == 0 and obj.key.endswith("/"):
            # A folder marker (as S3 consoles make): a directory, not a file in its way.
            folder = _safe_dest(root, rel.rstrip("/")) if rel.rstrip("/") else root
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                continue
        dest = _safe_dest(root, rel)
        if dest is None:
            report.failed[obj.key] = "the key does not make a safe local path"
            continue
        todo.append((obj, dest))
    if skip_existing:
        same = await anyio.to_thread.run_sync(
            lambda: [_matches_local(dest, obj) for obj, dest in todo]
        )
        report.skipped = [obj.key for (obj, _), s in zip(todo, same, strict=True) if s]
        todo = [t for t, s in zip(todo, same, strict=True) if not s]
    if planned is not None:
        planned(len(todo), sum(obj.size for obj, _ in todo))
    todo = await _by_archive(http, bucket, prefix, todo, listed_bytes, report, progress, on_file)
    items = iter(todo)

    async def worker() -> None:
        for obj, dest in items:
            try:
                await fetch(
                    http,
                    Version(obj.file_id, obj.size, obj.sha256),
                    dest,
                    progress=progress,
                    resume=obj.size > SMALL_FILE,
                )
            except (TFStorageError, OSError) as exc:
                report.failed[obj.key] = str(exc)
                continue
            report.transferred.append(obj.key)
            report.bytes += obj.size
            if on_file is not None:
                on_file(obj.key)

    with first_error():
        async with anyio.create_task_group() as tg:
            for _ in range(max(1, min(concurrency, len(todo)))):
                tg.start_soon(worker)
    return report


async def _by_archive(
    http: Http,
    bucket: str,
    prefix: str,
    todo: list[tuple[ObjectInfo, Path]],
    listed_bytes: int,
    report: TransferReport,
    progress: ProgressCallback | None,
    on_file: FileCallback | None,
) -> list[tuple[ObjectInfo, Path]]:
    """Many small files come faster as one tar of the prefix than as a GET each; worth
    it when they are most of the archive's bytes. Returns what is left to fetch."""
    small = [(o, d) for o, d in todo if o.size <= SMALL_FILE]
    small_bytes = sum(o.size for o, _ in small)
    if len(small) < ARCHIVE_MIN_FILES or listed_bytes > 2 * small_bytes + len(small) * 1024:
        return todo
    if prefix and not prefix.endswith("/"):
        return todo  # entry names are relative to the prefix's folder: they would not match
    wanted = {o.key[len(prefix) :]: (o, d) for o, d in small}

    def written(batch: list[tuple[str, int]]) -> None:
        for key, size in batch:
            report.transferred.append(key)
            report.bytes += size
            if progress is not None:
                progress(size)
            if on_file is not None:
                on_file(key)

    done = await fetch_archive(http, bucket, prefix, wanted, written)
    return [(o, d) for o, d in todo if o.key not in done]
