"""Checksums computed while the bytes flow to the blob store, and client digests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, cast

from tfstorage.domain.blocks import DEFAULT_BLOCK_SIZE, BlockChecksums, BlockHasher
from tfstorage.errors import EntityTooLarge, IncompleteBody, InvalidDigest

CHUNK_SIZE = 1024 * 1024
INLINE_HASH_BELOW = 64 * 1024


class DeferredChecks(Protocol):
    """A body that checks itself against digests promised with it (S3's signed payload
    hash, Content-MD5, x-amz-checksum-sha256) and lets a consumer that computes MD5 and
    SHA-256 of every byte anyway run those checks with its own digests: no byte hashed
    twice.

    `defer_checks()`, before the first byte is read, hands the checks over; the consumer
    then calls `check(md5, sha256)` (raw digests) once it has read the body to its end,
    which raises what the body would have raised there."""

    def defer_checks(self) -> None: ...

    def check(self, md5: bytes, sha256: bytes) -> None: ...


class HashingStream:
    """Re-chunks a byte stream to ~1 MiB, counts it, and computes MD5 + SHA-256 and the
    block checksums (a CRC32C per `block_size` bytes).

    The digests run in worker threads (hashlib releases the GIL) while the consumer
    writes the chunk before, so hashing overlaps the disk or network write instead of
    adding to it. Raises `EntityTooLarge` as soon as more than `limit` bytes arrive.
    A source with `DeferredChecks` has them run here, on these digests, at its end;
    the last chunk is handed out only after them and the length check.
    """

    def __init__(
        self,
        source: AsyncIterable[bytes],
        *,
        limit: int,
        expected_size: int | None = None,
        chunk_size: int = CHUNK_SIZE,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        self._source = source
        self._checks: DeferredChecks | None = None
        # Duck-typed, not isinstance of a runtime-checkable Protocol: that checks every
        # member by hand on each upload, and the service layer knows no body class.
        if callable(getattr(source, "defer_checks", None)):
            self._checks = cast(DeferredChecks, source)
            self._checks.defer_checks()
        self._limit = limit
        self._expected = expected_size
        self._chunk_size = chunk_size
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self._blocks = BlockHasher(block_size)
        self.size = 0
        self.finished = False

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def blocks(self) -> BlockChecksums:
        return self._blocks.result()

    def _sha256_and_blocks(self, chunk: bytes) -> None:
        # CRC32C (~0.07 s/GiB) rides with SHA-256 (~1.2 s/GiB with SHA-NI), the faster
        # of the two digests: MD5 (~2.6 s/GiB) still sets the pace, and no third thread
        # hop is added per chunk.
        self._sha256.update(chunk)
        self._blocks.update(chunk)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        # One chunk is held back: the last one goes out only once the body has passed
        # every check (its own, deferred here, and its length). A blob store that sends
        # the bytes on (an S3 engine's part upload) then never receives a whole part
        # whose checks failed, and never stores it under that part number.
        held: bytes | None = None
        try:
            async for chunk in self._rechunk():
                self.size += len(chunk)
                if self.size > self._limit:
                    raise EntityTooLarge(self._limit)
                if pending:
                    await asyncio.gather(*pending)
                    pending = []
                if len(chunk) < INLINE_HASH_BELOW:
                    # Hashing a small chunk takes microseconds; a thread hop costs more.
                    self._md5.update(chunk)
                    self._sha256.update(chunk)
                    self._blocks.update(chunk)
                else:
                    pending = [
                        loop.run_in_executor(None, self._md5.update, chunk),
                        loop.run_in_executor(None, self._sha256_and_blocks, chunk),
                    ]
                if held is not None:
                    yield held
                held = chunk
            if pending:
                await asyncio.gather(*pending)
                pending = []
            if self._checks is not None:
                # Where the source would have checked itself: at its end.
                self._checks.check(self._md5.digest(), self._sha256.digest())
        finally:
            # Never leave a hash thread touching a digest we are about to discard.
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self._expected is not None and self.size != self._expected:
            raise IncompleteBody(
                f"received {self.size} bytes but Content-Length declared {self._expected}"
            )
        if held is not None:
            yield held
        self.finished = True

    async def _rechunk(self) -> AsyncIterator[bytes]:
        buffer = bytearray()
        async for piece in self._source:
            if not buffer and len(piece) >= self._chunk_size:
                yield piece
                continue
            buffer += piece
            if len(buffer) >= self._chunk_size:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)


def parse_content_md5(value: str | None) -> str | None:
    """`Content-MD5` is base64 of the 16-byte digest (RFC 1864); return it as hex."""
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise InvalidDigest("Content-MD5 must be the base64 of a 16-byte MD5 digest")
    return raw.hex()


def parse_sha256(value: str | None) -> str | None:
    """`X-Checksum-SHA256`: 64 hex characters, or base64 of 32 bytes (as S3's header)."""
    if value is None:
        return None
    text = value.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text).hex()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidDigest("X-Checksum-SHA256 must be 64 hex characters or base64 of 32 bytes")
    return raw.hex()
