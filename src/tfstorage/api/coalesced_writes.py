"""One send per response, not one for its head and another for its body.

uvicorn writes a response's status line and headers, then each body chunk, each with its
own `transport.write`, and uvloop sends every write at once: a small answer (a 4 KiB GET,
an upload's JSON) went out as two TCP segments, two system calls, and woke its client
twice. On this 2-core VM a send on loopback costs tens of microseconds (the wake-up of
the other core), about a tenth of a small GET's CPU.

`CoalescingTransport` stands between the protocol and the transport: the small writes of
one event-loop iteration are joined and sent together at its end (`call_soon`), so a
head and the body that follows it in the same iteration leave as one segment. A streamed
response whose body comes later still gets its head at the end of the iteration that
wrote it (nothing waits for a body that is slow to come); big writes go straight
through, after what is held, so nothing is copied for large transfers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

# Writes held at most this much: more is sent at once (a body chunk of a large transfer).
HOLD_LIMIT: Final = 64 * 1024


class CoalescingTransport:
    """Wraps a connection's transport; everything but writing is the transport's own."""

    __slots__ = ("_held", "_held_size", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) >= HOLD_LIMIT:
            self.flush()
            self._transport.write(data)
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        # A copy of a mutable buffer: its owner may reuse it once write() returns.
        self._held.append(data if isinstance(data, bytes) else bytes(data))
        self._held_size += len(data)
        if self._held_size >= HOLD_LIMIT:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is held (also run at the end of the iteration that held it)."""
        if not self._held:
            return
        held, self._held, self._held_size = self._held, [], 0
        if self._transport.is_closing():
            return  # the connection is gone or going: nothing more can be sent
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held, self._held_size = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._held_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
