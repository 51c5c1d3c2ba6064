"""A response's head and body leave in one write (api/coalesced_writes.py): the writes
of one event-loop iteration are joined; big ones, closes and aborts keep their order and
meaning. On a real loop and a real socket pair, read from the other end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from tfstorage.api.coalesced_writes import HOLD_LIMIT, CoalescingTransport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Quiet(asyncio.Protocol):
    pass


@pytest.fixture
async def pair() -> AsyncIterator[tuple[CoalescingTransport, socket.socket, list[bytes]]]:
    """The wrapper around a real transport whose every write is recorded, and the socket
    at the other end."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(_Quiet, ours)
    writes: list[bytes] = []
    real_write = transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = write  # type: ignore[method-assign]
    theirs.setblocking(False)
    yield CoalescingTransport(transport, loop), theirs, writes  # type: ignore[arg-type]
    transport.abort()
    theirs.close()


async def received(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while len(data) < size:
        data += await loop.sock_recv(sock, size - len(data))
    return data


async def test_a_head_and_its_body_leave_in_one_write(
    pair: tuple[CoalescingTransport, socket.socket, list[bytes]],
) -> None:
    wrapper, theirs, writes = pair
    wrapper.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    wrapper.write(bytearray(b"hello"))
    assert writes == []  # held until the end of this iteration
    await asyncio.sleep(0)
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    assert await received(theirs, len(writes[0])) == writes[0]


async def test_a_head_whose_body_comes_later_is_sent_at_the_end_of_its_iteration(
    pair: tuple[CoalescingTransport, socket.socket, list[bytes]],
) -> None:
    wrapper, theirs, writes = pair
    wrapper.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.sleep(0)
    assert writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    wrapper.write(b"later")
    await asyncio.sleep(0)
    assert writes[1:] == [b"later"]
    assert await received(theirs, 24) == b"HTTP/1.1 200 OK\r\n\r\nlater"


async def test_big_writes_go_straight_through_after_what_is_held(
    pair: tuple[CoalescingTransport, socket.socket, list[bytes]],
) -> None:
    wrapper, theirs, writes = pair
    big = b"x" * HOLD_LIMIT
    wrapper.write(b"head")
    wrapper.write(big)
    assert writes == [b"head", big]  # in order, at once, the big chunk not copied into another
    assert await received(theirs, 4 + len(big)) == b"head" + big


async def test_close_sends_what_is_held_and_later_writes_are_dropped(
    pair: tuple[CoalescingTransport, socket.socket, list[bytes]],
) -> None:
    wrapper, theirs, writes = pair
    wrapper.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    wrapper.close()
    assert writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"]
    assert await received(theirs, len(writes[0])) == writes[0]
    wrapper.write(b"after close")  # dropped at the end of the iteration, no error
    await asyncio.sleep(0)
    assert writes == [b"HTTP/1.1 408 Request Timeout\r\n\r\n"]


async def test_abort_drops_what_is_held(
    pair: tuple[CoalescingTransport, socket.socket, list[bytes]],
) -> None:
    wrapper, _, writes = pair
    wrapper.write(b"never sent")
    assert wrapper.get_write_buffer_size() == len(b"never sent")
    wrapper.abort()
    await asyncio.sleep(0)
    assert writes == []
    assert wrapper.is_closing()  # everything else is the transport's own
