"""Block checksums (issue 10): hashing in any chunking, and ranges verified block by
block, releasing nothing of a block that does not match."""

from __future__ import annotations

import os
from itertools import pairwise

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfstorage.domain.blocks import (
    BlockChecksums,
    BlockHasher,
    BlockMismatch,
    DamagedBlock,
    RangeVerifier,
    block_checksums_of,
    check_block_size,
)

B = 16  # tiny blocks: every edge case within a few dozen bytes


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points)]


def test_one_crc32c_per_block_big_endian_last_block_short() -> None:
    data = os.urandom(2 * B + 5)
    sums = block_checksums_of(data, B)
    assert sums.count == 3 and sums.fits(len(data)) and not sums.fits(len(data) + B)
    for i, block in enumerate((data[:B], data[B : 2 * B], data[2 * B :])):
        assert sums.crc32c[4 * i : 4 * i + 4] == google_crc32c.value(block).to_bytes(4, "big")
    assert block_checksums_of(b"", B).count == 0


@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_chunking_gives_the_same_checksums(data: bytes, cuts: list[int]) -> None:
    hasher = BlockHasher(B)
    for chunk in _chunked(data, cuts):
        hasher.update(chunk)
    assert hasher.result() == block_checksums_of(data, B)


@given(
    st.binary(min_size=1, max_size=150),
    st.data(),
    st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_a_range_comes_out_whole_and_reads_only_its_end_blocks(
    data: bytes, draw: st.DataObject, cuts: list[int]
) -> None:
    start = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    end = draw.draw(st.integers(min_value=start + 1, max_value=len(data)))
    verifier = RangeVerifier(block_checksums_of(data, B), start, end, len(data))
    lo, hi = verifier.read_start, verifier.read_end
    # The extra reading: the part of the first and the last block outside the range.
    assert lo == start - start % B and hi == min(-(-end // B) * B, len(data))
    assert start - lo < B and hi - end < B
    out = [p for chunk in _chunked(data[lo:hi], cuts) for p in verifier.feed(chunk)]
    verifier.finish()
    assert b"".join(out) == data[start:end]


@given(
    st.binary(min_size=1, max_size=150),
    st.data(),
    st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_a_flipped_byte_stops_the_range_before_its_block(
    data: bytes, draw: st.DataObject, cuts: list[int]
) -> None:
    start = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    end = draw.draw(st.integers(min_value=start + 1, max_value=len(data)))
    verifier = RangeVerifier(block_checksums_of(data, B), start, end, len(data))
    lo, hi = verifier.read_start, verifier.read_end
    flip = draw.draw(st.integers(min_value=lo, max_value=hi - 1))
    damaged = bytearray(data)
    damaged[flip] ^= 0x01
    out: list[bytes] = []
    with pytest.raises(BlockMismatch) as caught:
        for chunk in _chunked(bytes(damaged[lo:hi]), cuts):
            out.extend(verifier.feed(chunk))
    bad = caught.value.block
    assert bad == DamagedBlock(flip // B, flip // B * B, min(flip // B * B + B, len(data)))
    # Everything released is right, and nothing of the damaged block left.
    assert b"".join(out) == data[start : max(start, bad.start)]
    assert verifier.position == bad.start  # where another copy can take over


@given(
    st.binary(min_size=1, max_size=150),
    st.integers(min_value=1, max_value=4),
    st.data(),
)
def test_a_whole_read_in_aligned_chunks_passes_each_chunk_through_or_stops_at_its_block(
    data: bytes, blocks_per_chunk: int, draw: st.DataObject
) -> None:
    """A whole GET reads 4 MiB chunks of 1 MiB blocks: each verified chunk is handed on
    as it came (not split and joined), and a flip still stops it at the damaged block."""
    step = blocks_per_chunk * B
    chunks = [data[at : at + step] for at in range(0, len(data), step)]
    verifier = RangeVerifier(block_checksums_of(data, B), 0, len(data), len(data))
    out = [p for chunk in chunks for p in verifier.feed(chunk)]
    verifier.finish()
    assert len(out) == len(chunks) and all(a is b for a, b in zip(out, chunks, strict=True))

    flip = draw.draw(st.integers(min_value=0, max_value=len(data) - 1))
    damaged = bytearray(data)
    damaged[flip] ^= 0x01
    verifier = RangeVerifier(block_checksums_of(data, B), 0, len(data), len(data))
    out = []
    with pytest.raises(BlockMismatch) as caught:
        for at in range(0, len(data), step):
            out.extend(verifier.feed(bytes(damaged[at : at + step])))
    bad = caught.value.block
    assert bad.index == flip // B
    assert b"".join(out) == data[: bad.start] and verifier.position == bad.start


def test_a_short_stream_is_a_damaged_block_and_another_copy_can_take_over() -> None:
    data = os.urandom(5 * B)
    verifier = RangeVerifier(block_checksums_of(data, B), 3, 4 * B + 2, len(data))
    out = list(verifier.feed(data[: 2 * B + 7]))  # the stream ends inside block 2
    assert b"".join(out) == data[3 : 2 * B]
    with pytest.raises(BlockMismatch) as caught:
        verifier.finish()
    assert caught.value.short and caught.value.block == DamagedBlock(2, 2 * B, 3 * B)
    verifier.restart()  # the rest from the replica, from block 2's start
    out = list(verifier.feed(data[verifier.position : verifier.read_end]))
    verifier.finish()
    assert b"".join(out) == data[2 * B : 4 * B + 2]


def test_damaged_blocks_are_named_by_index_and_offsets() -> None:
    data = os.urandom(4 * B + 3)
    sums = block_checksums_of(data, B)
    bad = bytearray(data)
    bad[B + 1] ^= 0xFF
    bad[4 * B + 2] ^= 0xFF
    assert sums.damaged(block_checksums_of(bytes(bad), B), len(data)) == [
        DamagedBlock(1, B, 2 * B),
        DamagedBlock(4, 4 * B, 4 * B + 3),
    ]
    truncated = block_checksums_of(data[: 2 * B + 1], B)
    assert [b.index for b in sums.damaged(truncated, len(data))] == [2, 3, 4]
    assert DamagedBlock(1, B, 2 * B).as_dict() == {"block": 1, "start": B, "end": 2 * B}


def test_malformed_checksums_and_block_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        BlockChecksums(B, b"\x00\x01\x02")
    with pytest.raises(ValueError):
        RangeVerifier(block_checksums_of(b"x" * 40, B), 0, 10, 49)  # 4 blocks, not 3
    for size in (1024, 128 * 1024 * 1024):
        with pytest.raises(ValueError):
            check_block_size(size)
    assert check_block_size(1024 * 1024) == 1024 * 1024
