"""Block checksums: one CRC32C per fixed-size block of a blob.

The whole-object SHA-256 proves a full read, but only once its last byte is in; a byte
range needs something it can check on its own. With a CRC32C per block, a range is read
from the start of its first block to the end of its last, each block checked as it
completes, and only then are its bytes (those inside the range) handed on: a flipped
byte stops the stream before the block holding it leaves. The extra reading is the
part of the first and the last block outside the range, nothing else.

Stored as `block_size` and `crc32c` = the blocks' CRCs concatenated, 4 bytes each,
big-endian; the last block may be shorter. Pure computation, no I/O: the service (and
the blob stores' multipart assembly) feed it bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import google_crc32c

KiB: Final = 1024
DEFAULT_BLOCK_SIZE: Final = 1024 * KiB
MIN_BLOCK_SIZE: Final = 4 * KiB
MAX_BLOCK_SIZE: Final = 64 * 1024 * KiB
CRC_BYTES: Final = 4


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of `data`, continuing from `crc` (C-accelerated; releases the GIL on
    large buffers)."""
    return int(google_crc32c.extend(crc, data))


def block_count(size: int, block_size: int) -> int:
    return -(-size // block_size)


def check_block_size(block_size: int) -> int:
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"must be between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE} bytes")
    return block_size


@dataclass(frozen=True, slots=True)
class DamagedBlock:
    """A block whose stored bytes do not match its checksum: `[start, end)` in the blob."""

    index: int
    start: int
    end: int

    def as_dict(self) -> dict[str, int]:
        return {"block": self.index, "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class BlockChecksums:
    block_size: int
    crc32c: bytes

    def __post_init__(self) -> None:
        if self.block_size < 1 or len(self.crc32c) % CRC_BYTES:
            raise ValueError("malformed block checksums")

    @property
    def count(self) -> int:
        return len(self.crc32c) // CRC_BYTES

    def crc(self, index: int) -> int:
        at = index * CRC_BYTES
        return int.from_bytes(self.crc32c[at : at + CRC_BYTES], "big")

    def fits(self, size: int) -> bool:
        """Do these checksums describe a blob of `size` bytes (one per block)?"""
        return self.count == block_count(size, self.block_size)

    def block(self, index: int, size: int) -> DamagedBlock:
        start = index * self.block_size
        return DamagedBlock(index, start, min(start + self.block_size, size))

    def covering(self, start: int, end: int, size: int) -> tuple[int, int]:
        """The bytes to read to verify `[start, end)`: from the start of its first block
        to the end of its last (or of the blob)."""
        first = start - start % self.block_size
        last = min(-(-end // self.block_size) * self.block_size, size)
        return first, max(last, first)

    def damaged(self, actual: BlockChecksums, size: int) -> list[DamagedBlock]:
        """The blocks of a `size`-byte blob whose bytes (hashed into `actual`, same block
        size) differ from these checksums; a block missing from `actual` is damaged."""
        if actual.block_size != self.block_size:
            raise ValueError("block checksums of different block sizes")
        return [
            self.block(i, size)
            for i in range(self.count)
            if i >= actual.count or actual.crc(i) != self.crc(i)
        ]


class BlockHasher:
    """Computes a blob's block checksums from its bytes, fed in order in any chunking."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self._crcs = bytearray()
        self._crc = 0
        self._filled = 0  # bytes of the current block seen so far

    def update(self, chunk: bytes) -> None:
        """Blocking for large chunks (~12 GB/s): call it from a worker thread there."""
        if self._filled == 0 and len(chunk) == self.block_size:
            self._crcs += crc32c(chunk).to_bytes(CRC_BYTES, "big")  # the aligned fast path
            return
        at = 0
        while at < len(chunk):
            take = min(self.block_size - self._filled, len(chunk) - at)
            piece = chunk if take == len(chunk) else chunk[at : at + take]
            self._crc = crc32c(piece, self._crc)
            self._filled += take
            at += take
            if self._filled == self.block_size:
                self._crcs += self._crc.to_bytes(CRC_BYTES, "big")
                self._crc = self._filled = 0

    def result(self) -> BlockChecksums:
        crcs = bytes(self._crcs)
        if self._filled:
            crcs += self._crc.to_bytes(CRC_BYTES, "big")
        return BlockChecksums(self.block_size, crcs)


def block_checksums_of(data: bytes, block_size: int = DEFAULT_BLOCK_SIZE) -> BlockChecksums:
    hasher = BlockHasher(block_size)
    hasher.update(data)
    return hasher.result()


class BlockMismatch(Exception):
    """A block read for a range does not match its checksum (or ended early)."""

    def __init__(self, block: DamagedBlock, *, short: bool = False) -> None:
        super().__init__(f"block {block.index} [{block.start}, {block.end}) failed its checksum")
        self.block = block
        self.short = short


class RangeVerifier:
    """Checks the bytes of `covering(start, end)` block by block and releases, from each
    block that verified, the part inside `[start, end)`.

    Feed it the covering bytes in order (any chunking). Nothing of a block is released
    before the whole block has matched its CRC; memory holds at most one block.
    `position` is where in the blob the next fed byte must come from: after a mismatch
    it is the damaged block's start, so a reader can go on from another copy there.
    """

    def __init__(self, checksums: BlockChecksums, start: int, end: int, size: int) -> None:
        if not checksums.fits(size) or not 0 <= start <= end <= size:
            raise ValueError("the range or the checksums do not fit the blob")
        self._sums = checksums
        self._start, self._end, self._size = start, end, size
        self.read_start, self.read_end = checksums.covering(start, end, size)
        self.position = self.read_start  # start of the block being gathered
        self._pieces: list[bytes] = []
        self._gathered = 0
        self._crc = 0

    @property
    def block_size(self) -> int:
        return self._sums.block_size

    def _block_end(self) -> int:
        return min(self.position + self._sums.block_size, self._size)

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The verified bytes (inside the range) this chunk completes, block by block;
        raises `BlockMismatch` at a block that does not match, having released none of
        it (the blocks before it are yielded first)."""
        if self._whole_blocks_inside(chunk):
            yield from self._feed_whole_blocks(chunk)
            return
        at = 0
        while at < len(chunk):
            if self.position >= self.read_end:  # more bytes than the range's blocks
                index = self.position // self._sums.block_size
                raise BlockMismatch(self._sums.block(index, self._size))
            need = self._block_end() - self.position - self._gathered
            take = min(need, len(chunk) - at)
            piece = chunk if take == len(chunk) else chunk[at : at + take]
            self._crc = crc32c(piece, self._crc)
            self._pieces.append(piece)
            self._gathered += take
            at += take
            if take == need:
                yield from self._release()

    def _whole_blocks_inside(self, chunk: bytes) -> bool:
        """Whether `chunk` starts a block, ends one (or the blob) and lies inside the
        range: the common case of a whole read in aligned chunks."""
        end = self.position + len(chunk)
        return (
            self._gathered == 0
            and self._start <= self.position
            and end <= min(self._end, self.read_end)
            and (len(chunk) % self._sums.block_size == 0 or end == self._size)
        )

    def _feed_whole_blocks(self, chunk: bytes) -> Iterator[bytes]:
        """Each block checked, and the chunk released as it came, not split into its
        blocks and joined again. (The CRC's slice is still a copy: google-crc32c takes
        bytes, not a memoryview.)"""
        size = self._sums.block_size
        for at in range(0, len(chunk), size):
            index = (self.position + at) // size
            block = chunk if len(chunk) <= size else chunk[at : at + size]
            if crc32c(block) != self._sums.crc(index):
                if at:
                    yield chunk[:at]
                self.position += at
                raise BlockMismatch(self._sums.block(index, self._size))
        self.position += len(chunk)
        yield chunk

    def _release(self) -> list[bytes]:
        index = self.position // self._sums.block_size
        if self._crc != self._sums.crc(index):
            self._pieces, self._gathered, self._crc = [], 0, 0
            raise BlockMismatch(self._sums.block(index, self._size))
        block_start = self.position
        pieces = self._pieces
        self.position = self._block_end()
        self._pieces, self._gathered, self._crc = [], 0, 0
        lo, hi = max(self._start, block_start), min(self._end, self.position)
        if lo == block_start and hi == self.position:
            return pieces
        data = b"".join(pieces)
        return [data[lo - block_start : hi - block_start]] if hi > lo else []

    def finish(self) -> None:
        """The stream ended: raises `BlockMismatch(short=True)` if it ended early."""
        if self.position < self.read_end:
            index = self.position // self._sums.block_size
            raise BlockMismatch(self._sums.block(index, self._size), short=True)

    def restart(self) -> None:
        """Drop the block being gathered: the next bytes fed come from `position` again
        (another copy of the blob)."""
        self._pieces, self._gathered, self._crc = [], 0, 0
