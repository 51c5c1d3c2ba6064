"""Client-side helpers shared by the server tests: upload bodies, listings, blob files."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

_BLOB_NAME = re.compile(r"[0-9a-f]{32}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def chunks(data: bytes, size: int, *, pause: Callable[[], None] | None = None) -> Iterator[bytes]:
    """`data` in pieces, calling `pause()` before each one (a slow client)."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        if pause is not None:
            pause()
        yield bytes(view[start : start + size])


def multipart_body(
    fields: dict[str, str],
    filename: str,
    body: Iterable[bytes],
    *,
    trailer: dict[str, str] | None = None,
    before_trailer: Callable[[], None] | None = None,
) -> tuple[str, Iterator[bytes]]:
    """A streamed multipart/form-data body: `fields`, one file part, then `trailer` fields.

    `before_trailer()` runs once the file part has been closed by the next boundary, i.e.
    when the server has the whole file but not yet the whole form.
    """
    boundary = f"tfs-{uuid.uuid4().hex}"

    def part(name: str, filename: str | None = None, *, first: bool = False) -> bytes:
        # The CRLF before a boundary belongs to the boundary, not to the previous part.
        head = "" if first else "\r\n"
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"\r\nContent-Type: application/octet-stream'
        return f"{head}--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()

    def generate() -> Iterator[bytes]:
        for i, (name, value) in enumerate(fields.items()):
            yield part(name, first=i == 0) + value.encode()
        yield part("file", filename, first=not fields)
        yield from body
        for i, (name, value) in enumerate((trailer or {}).items()):
            yield part(name)
            if i == 0 and before_trailer is not None:
                before_trailer()
            yield value.encode()
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", generate()


def list_all(client: httpx.Client, bucket: str) -> dict[str, dict[str, Any]]:
    """Every visible object of a bucket (following `next_marker`), by key."""
    found: dict[str, dict[str, Any]] = {}
    marker = ""
    while True:
        response = client.get(f"/api/v1/list/{bucket}", params={"marker": marker, "limit": 500})
        assert response.status_code == 200, response.text
        page = response.json()
        for obj in page["objects"]:
            assert obj["key"] not in found, f"key listed twice: {obj['key']}"
            found[obj["key"]] = obj
        if not page["truncated"]:
            return found
        assert page["next_marker"] and page["next_marker"] != marker
        marker = page["next_marker"]


def blob_files(data_dir: Path) -> list[Path]:
    """The committed blob files of the local store (`blobs/ab/cd/<id>`, not `.tmp`)."""
    root = data_dir / "blobs"
    return [
        p
        for p in root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*")
        if p.is_file() and _BLOB_NAME.fullmatch(p.name)
    ]


def temp_files(data_dir: Path) -> list[str]:
    tmp = data_dir / "blobs" / ".tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
