"""Resumable upload sessions: value types and the pure rules of part lists."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tfstorage.domain.object_lock import VersionLock
from tfstorage.errors import EntityTooSmall, InvalidArgument, InvalidPart, InvalidPartOrder

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last, on every backend
MAX_PART_SIZE = 5 * 1024**3
MAX_PARTS = 10_000


@dataclass(frozen=True, slots=True)
class UploadPart:
    part_number: int
    size: int
    md5: str  # the part's ETag
    sha256: str
    handle: str  # where the blob store keeps it
    stored_at: datetime


@dataclass(frozen=True, slots=True)
class UploadSession:
    upload_id: str
    bucket: str
    key: str
    blob_id: str
    backend_upload: str
    content_type: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]
    declared_size: int | None
    declared_sha256: str | None
    part_size: int | None
    created_by: str
    created_at: datetime
    touched_at: datetime
    parts: tuple[UploadPart, ...] = field(default=())
    lock: VersionLock | None = None  # S3's x-amz-object-lock-*, given at completion
    content_headers: dict[str, str] = field(default_factory=dict)  # Cache-Control...

    @property
    def stored_bytes(self) -> int:
        return sum(part.size for part in self.parts)


@dataclass(frozen=True, slots=True)
class PartLayout:
    """How an object assembled from parts was cut: each part's size in order, and the
    ETag S3 gives such an object (clients compare it with one computed from their parts)."""

    etag: str
    sizes: tuple[int, ...]

    def locate(self, part_number: int) -> tuple[int, int] | None:
        """(offset, size) of part `part_number` (1-based), None past the last part."""
        if not 1 <= part_number <= len(self.sizes):
            return None
        return sum(self.sizes[: part_number - 1]), self.sizes[part_number - 1]


def assembled_layout(parts: Sequence[UploadPart]) -> PartLayout:
    """S3's multipart ETag: the MD5 of the parts' binary MD5s, then "-<count>"."""
    digest = hashlib.md5(b"".join(bytes.fromhex(p.md5) for p in parts), usedforsecurity=False)
    return PartLayout(f"{digest.hexdigest()}-{len(parts)}", tuple(p.size for p in parts))


def parts_digest(requested: Sequence[tuple[int, str]]) -> str:
    """Names a completion's part list: the same list sent again is the same completion."""
    text = ",".join(f"{number}:{normal_etag(etag)}" for number, etag in requested)
    return hashlib.sha256(text.encode()).hexdigest()


def part_offset(session: UploadSession, part_number: int, size: int) -> int | None:
    """Where part `part_number` of `size` bytes sits in the object if the client keeps to
    the session's part size (every part but the last that size); None when the part does
    not fit that layout. Parts given an offset never overlap: each stays within its own
    `part_size` slot, so a wrong guess of the layout costs a copy, never bytes."""
    step, total = session.part_size, session.declared_size
    if step is None or step <= 0 or size > step:
        return None
    offset = (part_number - 1) * step
    if total is not None and offset + size > total:
        return None
    return offset


def settles_part_size(session: UploadSession, size: int) -> bool:
    """Does a part of `size` bytes tell the session's part size? The first part of at
    least the minimum size does (a client's parts all start at once, the last one rarely
    first); a declared `part_size` is never overridden."""
    return session.part_size is None and size >= MIN_PART_SIZE


def is_upload_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def check_part_number(part_number: int) -> int:
    if not 1 <= part_number <= MAX_PARTS:
        raise InvalidArgument(f"part numbers go from 1 to {MAX_PARTS}")
    return part_number


def normal_etag(etag: str) -> str:
    return etag.strip().strip('"').lower()


def select_parts(
    stored: Sequence[UploadPart], requested: Sequence[tuple[int, str]]
) -> list[UploadPart]:
    """The stored parts a completion names, checked as S3 checks them: ascending numbers,
    each etag that of the stored part, every part but the last at least 5 MiB."""
    if not requested:
        raise InvalidPart("a completion must list at least one part")
    by_number = {part.part_number: part for part in stored}
    chosen: list[UploadPart] = []
    previous = 0
    for number, etag in requested:
        if number <= previous:
            raise InvalidPartOrder(f"part {number} is listed after part {previous}")
        previous = number
        part = by_number.get(number)
        if part is None:
            raise InvalidPart(f"part {number} has not been uploaded")
        if normal_etag(etag) != part.md5:
            raise InvalidPart(f"part {number}'s etag does not match the part stored")
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < MIN_PART_SIZE:
            raise EntityTooSmall(
                f"part {part.part_number} is {part.size} bytes; every part but the last"
                f" must be at least {MIN_PART_SIZE} bytes"
            )
    return chosen
