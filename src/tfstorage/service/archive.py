"""Archives of a prefix (zip or tar), streamed: never built in memory or on disk.

Entries are the latest live versions under the prefix, listed a bounded page at a time
and read one after the other through the verified read path: an entry whose bytes fail
their SHA-256 breaks the stream off (the client sees a cut transfer, never an archive
that looks whole). Entry names are made safe to extract (see `entry_name`).
"""

from __future__ import annotations

import re
import stat
import tarfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from tfstorage.domain.names import validate_bucket_name, validate_prefix
from tfstorage.domain.records import ObjectVersion
from tfstorage.service.context import StorageContext
from tfstorage.service.reads import ObjectReader

if TYPE_CHECKING:
    from stream_zip import AsyncMemberFile

ArchiveFormat = Literal["zip", "tar"]
_LIST_PAGE = 1000
_MODE = 0o644
# Deflate level 0 (stored blocks): ML data is mostly incompressible, and even level 1
# runs at ~10 MB/s a core on such data against ~300 MB/s for level 0. (A stored zip entry
# would need its CRC-32 before its bytes, i.e. reading every object twice.)
_ZIP_LEVEL = 0
_ZIP_CHUNK = 1024 * 1024  # fewer thread hops in stream-zip's async wrapper
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
# Control characters, and characters Windows refuses in file names.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*\\]')


def entry_name(key: str, prefix: str) -> str:
    """A name safe to extract anywhere: relative to the prefix's folder, no absolute
    path, no `.` or `..` segment, no backslash, control or Windows-reserved character.

    S3 keys may hold anything, so every segment is cleaned rather than the key refused.
    """
    base = prefix[: prefix.rfind("/") + 1]
    relative = key[len(base) :] if key.startswith(base) else key
    segments = []
    for segment in relative.split("/"):
        segment = _UNSAFE.sub("_", segment).strip()
        if segment in ("", "."):
            continue
        if segment == "..":
            segment = "__"
        segments.append(segment)
    return "/".join(segments) or "_"


class _Names:
    """Unique entry names: two keys that clean to the same name get `~2`, `~3`..."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self._used:
            n += 1
            stem, dot, ext = name.rpartition(".")
            candidate = f"{stem}~{n}.{ext}" if dot and "/" not in ext else f"{name}~{n}"
        self._used.add(candidate)
        return candidate


class ArchiveService:
    def __init__(self, ctx: StorageContext, reader: ObjectReader) -> None:
        self._ctx = ctx
        self._reader = reader

    async def check(self, bucket: str, prefix: str) -> None:
        """Refuse before any byte is sent: bad names, no such bucket."""
        validate_bucket_name(bucket)
        validate_prefix(prefix)
        await self._ctx.db(self._ctx.index.get_bucket, bucket)

    def stream(self, bucket: str, prefix: str, fmt: ArchiveFormat) -> AsyncIterator[bytes]:
        if fmt == "tar":
            return self._tar(bucket, prefix)
        return self._zip(bucket, prefix)

    async def _entries(self, bucket: str, prefix: str) -> AsyncIterator[tuple[str, ObjectVersion]]:
        names = _Names()
        marker = ""
        while True:
            listing = await self._ctx.db(
                self._ctx.index.list_objects, bucket, prefix=prefix, marker=marker, limit=_LIST_PAGE
            )
            for version in listing.objects:
                yield names.unique(entry_name(version.key, prefix)), version
            if not listing.truncated or not listing.next_marker:
                return
            marker = listing.next_marker

    async def _bytes(self, version: ObjectVersion) -> AsyncIterator[bytes]:
        # Opened only when the archive reaches this entry: one blob open at a time.
        stream = await self._reader.open(version, None)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    async def _zip(self, bucket: str, prefix: str) -> AsyncIterator[bytes]:
        # Imported here: stream_zip brings pycryptodome (for encrypted zips, unused), a few
        # MiB in every worker process for a route few deployments call.
        from stream_zip import ZIP_AUTO, async_stream_zip

        async def members() -> AsyncIterator[AsyncMemberFile]:
            async for name, version in self._entries(bucket, prefix):
                method = ZIP_AUTO(version.size, level=_ZIP_LEVEL)  # ZIP64 when needed
                yield name, version.created_at, stat.S_IFREG | _MODE, method, self._bytes(version)

        async for chunk in async_stream_zip(members(), chunk_size=_ZIP_CHUNK):
            yield chunk

    async def _tar(self, bucket: str, prefix: str) -> AsyncIterator[bytes]:
        sent = 0
        async for name, version in self._entries(bucket, prefix):
            info = tarfile.TarInfo(name)
            info.size = version.size
            info.mtime = int(version.created_at.timestamp())
            info.mode = _MODE
            # PAX headers carry long and non-ASCII names and sizes over 8 GiB.
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            yield header
            size = 0
            async for chunk in self._bytes(version):
                size += len(chunk)
                yield chunk
            # (The verified read raises before a wrong-sized entry completes.)
            padding = -size % _BLOCK
            yield b"\0" * padding
            sent += len(header) + size + padding
        end = 2 * _BLOCK
        end += -(sent + end) % _RECORD
        yield b"\0" * end
