"""The write path's hashing stream runs a body's deferred checks on its own digests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from tfstorage.errors import IncompleteBody
from tfstorage.service.hashing import CHUNK_SIZE, HashingStream

pytestmark = pytest.mark.anyio

DATA = b"shard" * 500_000  # 2.5 MB: three chunks, hashed in threads


class Refused(Exception):
    pass


class SelfChecking:
    """A body with `DeferredChecks`, recording what it is asked and when."""

    def __init__(self, data: bytes, *, refuse: bool = False) -> None:
        self.data = data
        self.refuse = refuse
        self.deferred = False
        self.checked: list[tuple[bytes, bytes, int]] = []
        self.read = 0

    def defer_checks(self) -> None:
        self.deferred = True

    def check(self, md5: bytes, sha256: bytes) -> None:
        self.checked.append((md5, sha256, self.read))
        if self.refuse:
            raise Refused

    async def _pieces(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 65_536):
            piece = self.data[start : start + 65_536]
            self.read += len(piece)
            yield piece

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()


async def test_the_checks_run_once_on_the_streams_digests_at_the_end() -> None:
    body = SelfChecking(DATA)
    stream = HashingStream(body, limit=len(DATA))
    assert body.deferred  # asked before any byte is read
    received = b"".join([chunk async for chunk in stream])
    assert received == DATA and stream.finished
    assert body.checked == [(hashlib.md5(DATA).digest(), hashlib.sha256(DATA).digest(), len(DATA))]
    assert stream.sha256 == hashlib.sha256(DATA).hexdigest()


async def test_a_failed_check_ends_the_stream_before_its_last_chunk() -> None:
    # A blob store that sends the bytes on (an S3 engine's part upload) must never get
    # a whole body whose checks failed: the last chunk waits for them.
    body = SelfChecking(DATA, refuse=True)
    stream = HashingStream(body, limit=len(DATA))
    received = bytearray()
    with pytest.raises(Refused):
        async for chunk in stream:
            received += chunk
    assert bytes(received) == DATA[: 2 * CHUNK_SIZE]  # the first two of three chunks
    assert not stream.finished
    assert len(body.checked) == 1


async def test_a_short_body_is_checked_first_then_refused_whole() -> None:
    # The check comes first, as where the body checked itself (at its end), then the
    # length; neither lets the last chunk out.
    refusing = HashingStream(
        SelfChecking(DATA, refuse=True), limit=2 * len(DATA), expected_size=len(DATA) + 1
    )
    with pytest.raises(Refused):
        [chunk async for chunk in refusing]
    short = HashingStream(SelfChecking(DATA), limit=2 * len(DATA), expected_size=len(DATA) + 1)
    received = bytearray()
    with pytest.raises(IncompleteBody):
        async for chunk in short:
            received += chunk
    assert len(received) == 2 * CHUNK_SIZE


async def test_a_plain_body_is_not_asked_anything() -> None:
    async def plain() -> AsyncIterator[bytes]:
        yield DATA

    stream = HashingStream(plain(), limit=len(DATA))
    assert b"".join([chunk async for chunk in stream]) == DATA
    assert stream.md5 == hashlib.md5(DATA).hexdigest()
