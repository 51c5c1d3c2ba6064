"""A fault-injecting TCP proxy in front of the engine's S3 port.

It runs its own asyncio loop in a thread, so it serves blocking clients (boto3) and the
tests' own event loops alike. Switching mode drops every open connection, as an engine
restart would; connections made afterwards get the new behaviour:

- `pass`: bytes both ways, untouched.
- `refuse`: new connections are reset at once.
- `delay`: every chunk of a response waits `seconds` before going on.
- `drop_response`: a connection is cut after `after` bytes of responses.
- `drop_request`: a connection is cut after `after` bytes of requests (an upload).
- `status_503`: every request is answered `503 SlowDown`, then the connection closed.
- `flip`: one byte of the first response body on each connection is inverted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class _Mode:
    name: str = "pass"
    seconds: float = 0.0
    after: int = 0
    flip_at: int = 100  # offset into the body of the byte `flip` inverts


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._mode = _Mode()
        self._loop = asyncio.new_event_loop()
        self._connections: set[asyncio.StreamWriter] = set()
        self.answered_503 = 0
        self.connections = 0
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, name: str, *, seconds: float = 0.0, after: int = 0) -> None:
        """Switch mode and drop every open connection."""
        assert name in (
            "pass",
            "refuse",
            "delay",
            "drop_response",
            "drop_request",
            "status_503",
            "flip",
        )
        future = asyncio.run_coroutine_threadsafe(
            self._switch(_Mode(name, seconds, after)), self._loop
        )
        future.result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        started.set()
        self._loop.run_forever()

    async def _switch(self, mode: _Mode) -> None:
        self._mode = mode
        for writer in list(self._connections):
            _abort(writer)
        self._connections.clear()

    async def _shutdown(self) -> None:
        self._server.close()
        await self._switch(_Mode())
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self._mode
        self.connections += 1
        if mode.name == "refuse":
            _abort(writer)
            return
        self._connections.add(writer)
        try:
            if mode.name == "status_503":
                await self._answer_503(reader, writer)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self._upstream_port
                )
            except OSError:
                _abort(writer)
                return
            self._connections.add(up_writer)
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, mode, request=True),
                    self._pump(up_reader, writer, mode, request=False),
                    return_exceptions=True,
                )
            finally:
                self._connections.discard(up_writer)
        finally:
            self._connections.discard(writer)

    async def _answer_503(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            self.answered_503 += 1
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(_SLOW_DOWN)}\r\nConnection: close\r\n\r\n".encode()
                + _SLOW_DOWN
            )
            await writer.drain()
        _close(writer)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        mode: _Mode,
        *,
        request: bool,
    ) -> None:
        forwarded = 0
        body_offset: int | None = None  # for `flip`: where the first body starts
        flipped = False
        try:
            while data := await source.read(65536):
                if not request and mode.name == "delay":
                    await asyncio.sleep(mode.seconds)
                cut = mode.name == ("drop_request" if request else "drop_response")
                if cut and forwarded + len(data) > mode.after:
                    sink.write(data[: mode.after - forwarded])
                    with contextlib.suppress(Exception):
                        await sink.drain()
                    _abort(sink)
                    return
                if mode.name == "flip" and not request and not flipped:
                    data, body_offset, flipped = _flip(data, forwarded, body_offset, mode.flip_at)
                forwarded += len(data)
                sink.write(data)
                await sink.drain()
        finally:
            _close(sink)


def _flip(
    data: bytes, forwarded: int, body_offset: int | None, flip_at: int
) -> tuple[bytes, int | None, bool]:
    if body_offset is None:
        end = data.find(b"\r\n\r\n")  # a header split across reads is not worth handling
        if end < 0:
            return data, None, False
        body_offset = forwarded + end + 4
    position = body_offset + flip_at - forwarded
    if 0 <= position < len(data):
        changed = bytearray(data)
        changed[position] ^= 0xFF
        return bytes(changed), body_offset, True
    return data, body_offset, False


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
