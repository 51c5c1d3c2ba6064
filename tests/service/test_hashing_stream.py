"""The write path's hashing stream runs a body's deferred checks on its own digests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest

from tfstorage.service.hashing import HashingStream

pytestmark = pytest.mark.anyio

DATA = b"shard" * 100_000  # big enough for the digests to run in threads


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


async def test_a_failed_check_ends_the_stream_with_its_error() -> None:
    body = SelfChecking(DATA, refuse=True)
    stream = HashingStream(body, limit=len(DATA))
    received = bytearray()
    with pytest.raises(Refused):
        async for chunk in stream:
            received += chunk
    assert bytes(received) == DATA  # every byte went through, then no clean end
    assert not stream.finished
    assert len(body.checked) == 1


async def test_a_plain_body_is_not_asked_anything() -> None:
    async def plain() -> AsyncIterator[bytes]:
        yield DATA

    stream = HashingStream(plain(), limit=len(DATA))
    assert b"".join([chunk async for chunk in stream]) == DATA
    assert stream.md5 == hashlib.md5(DATA).hexdigest()
