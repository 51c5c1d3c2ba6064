"""Multipart blobs on local disk: where parts live, how they are read back, swept.

The parts of an upload live in `root/.parts/<blob_id>/`. When the service knows where a
part will sit in the object (the session's part size), the first copy of that part is
written straight into `assembly` at its offset (handle `<number>@<offset>`; a marker file
`<number>.placed` makes sure only one request ever writes that region). Then assembling
is only a hashing read of `assembly` and a rename: no second copy of the bytes.

Any other part (a re-sent one, or one whose place is unknown) is a file of its own
(`<number>-<random>`), so the part the index knows stays intact until the index points
elsewhere; assembling then streams the parts in order into the usual temp file while
hashing them, then fsyncs and renames it into place.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from tfstorage.blobs.base import StoredPart, is_blob_id
from tfstorage.blobs.digests import Digests
from tfstorage.errors import InvalidPart

PARTS_DIR: Final = ".parts"
ASSEMBLY: Final = "assembly"
SEALED: Final = "sealed"
_COPY_CHUNK: Final = 8 * 1024 * 1024


def upload_dir(parts_root: str, blob_id: str, upload: str) -> str:
    # The handle is the blob id itself; anything else names no directory of ours.
    if upload != blob_id or not is_blob_id(upload):
        raise InvalidPart("the blob store has no such multipart upload")
    return os.path.join(parts_root, upload)


def new_part_name(part_number: int) -> str:
    return f"{part_number}-{secrets.token_hex(8)}"


def placed_handle(part_number: int, offset: int) -> str:
    return f"{part_number}@{offset}"


def claim_place(directory: str, part_number: int) -> bool:
    """Reserve part `part_number`'s region of `assembly` (once per upload, ever), unless
    a completion sealed the upload (see `seal`): the part is then a file of its own."""
    marker = os.path.join(directory, f"{part_number}.placed")
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640))
    except FileExistsError:
        return False
    return not os.path.exists(os.path.join(directory, SEALED))


def placed_whole(directory: str, part_number: int) -> None:
    """Note that the placed part is written (and its descriptor closed)."""
    marker = os.path.join(directory, f"{part_number}.done")
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640))


def seal(directory: str) -> bool:
    """Stop parts from being placed in `assembly`; True if none is still being written
    there. A completion renaming `assembly` into the blob must know that: a part written
    meanwhile (one the completion leaves out) would land in the blob. A part claims its
    place before it looks for the seal, the completion seals before it looks at the
    claims: each sees the other."""
    os.close(os.open(os.path.join(directory, SEALED), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC))
    names = set(os.listdir(directory))
    claimed = (name.removesuffix(".placed") for name in names if name.endswith(".placed"))
    return all(f"{number}.done" in names for number in claimed)


def part_location(directory: str, part: StoredPart) -> tuple[str, int]:
    """(file, offset in it) where the part's bytes are."""
    number, placed, offset = part.handle.partition("@")
    if placed:
        if number != str(part.part_number) or not offset.isdigit():
            raise InvalidPart(f"part {part.part_number} is not stored")
        return os.path.join(directory, ASSEMBLY), int(offset)
    number, _, suffix = part.handle.partition("-")
    if number != str(part.part_number) or len(suffix) != 16 or not is_blob_id(suffix * 2):
        raise InvalidPart(f"part {part.part_number} is not stored")
    return os.path.join(directory, part.handle), 0


def in_place(locations: Sequence[tuple[str, int]], parts: Sequence[StoredPart]) -> bool:
    """Do the parts already sit in `assembly`, one after the other from offset 0?"""
    target = 0
    for (path, offset), part in zip(locations, parts, strict=True):
        if os.path.basename(path) != ASSEMBLY or offset != target:
            return False
        target += part.size
    return bool(parts)


def concatenate(
    locations: Sequence[tuple[str, int, int]],
    write: Callable[[list[bytes]], None] | None,
    digests: Digests | None = None,
) -> Digests:
    """Read the (file, offset, size) ranges in order, handing each chunk to `write` while
    two threads hash it (MD5 and SHA-256 side by side): one pass over the page cache."""
    digests = digests or Digests()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="digest") as pool:
        for path, start, size in locations:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise InvalidPart("a part of the upload is no longer stored") from None
            try:
                os.posix_fadvise(fd, start, size, os.POSIX_FADV_SEQUENTIAL)
                offset, end = start, start + size
                while offset < end:
                    chunk = os.pread(fd, min(_COPY_CHUNK, end - offset), offset)
                    if not chunk:
                        raise InvalidPart("a part of the upload is shorter than recorded")
                    offset += len(chunk)
                    hashing = digests.submit(chunk, pool)
                    if write is not None:
                        write([chunk])
                    for future in hashing:
                        future.result()
            finally:
                os.close(fd)
    return digests


class PrefixDigests:
    """The digests of an upload's assembly file from offset 0, over the placed parts
    finished so far, advanced in the background as parts land (they mostly land in order,
    a few in flight at once): by completion, little is left to hash. In-process only: a
    completion served by another process (or after a restart) hashes everything."""

    def __init__(self, path: str, block_size: int) -> None:
        self._path = path
        self._ready: dict[int, tuple[int, str]] = {}  # offset -> (size, handle)
        self._ready_lock = threading.Lock()
        self._hashing = threading.Lock()  # held while a part is hashed
        self._running = False  # a background advance is on (at most one per upload)
        self._digests = Digests(block_size)
        self._handles: list[str] = []

    def add(self, offset: int, size: int, handle: str) -> bool:
        """Note a finished part; True if the caller must start `advance` (none runs)."""
        with self._ready_lock:
            self._ready[offset] = (size, handle)
            if self._running:
                return False
            self._running = True
            return True

    def advance(self) -> None:
        """Hash every finished part that continues the prefix (blocking), then stop."""
        while True:
            with self._hashing:
                with self._ready_lock:
                    found = self._ready.pop(self._digests.size, None)
                    if found is None:
                        self._running = False
                        return
                self._hash(*found)

    def of(self, handles: Sequence[str], block_size: int) -> Digests | None:
        """The digests of exactly these parts in this order, with blocks of `block_size`,
        if that is what was hashed (hashing what is left of the prefix first)."""
        if block_size != self._digests.block_size:
            return None
        with self._hashing:
            while True:
                with self._ready_lock:
                    found = self._ready.pop(self._digests.size, None)
                if found is None:
                    break
                self._hash(*found)
            return self._digests if self._handles == list(handles) else None

    def _hash(self, size: int, handle: str) -> None:
        concatenate([(self._path, self._digests.size, size)], None, self._digests)
        self._handles.append(handle)


def sweep_uploads(parts_root: str, older_than: float, keep: Collection[str]) -> int:
    """Remove upload directories nobody keeps that have not changed since `older_than`."""
    removed = 0
    try:
        entries = list(os.scandir(parts_root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name in keep:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mtime < older_than:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed
