"""A counting, fault-injecting TCP proxy between a client and a real server.

It counts the bytes each way (`sent`: client to server, so what an upload really sent;
`received`: server to client), can slow uploads down (`upload_rate`), keeps the head of
every request (`requests`: request line and headers, to see `Range`), and can spoil the
next connections' responses: `cut` closes a connection after `after` response bytes, `flip` inverts the byte at
response offset `after`. Runs its own asyncio loop in a thread, so blocking clients
and subprocesses can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass


class _RequestHeads:
    """Splits one connection's request stream into requests (by Content-Length) and
    records each request's head: its request line and headers."""

    def __init__(self, heads: list[bytes], lock: threading.Lock) -> None:
        self._heads = heads
        self._lock = lock
        self._buffer = b""
        self._body_left = 0
        self._lost = False  # a chunked body: requests can no longer be told apart

    def feed(self, data: bytes) -> None:
        while data and not self._lost:
            if self._body_left:
                skip = min(self._body_left, len(data))
                self._body_left -= skip
                data = data[skip:]
                continue
            self._buffer += data
            data = b""
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._buffer[:end], self._buffer[end + 4 :]
            self._buffer = b""
            with self._lock:
                self._heads.append(head)
            for line in head.lower().split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name == b"content-length":
                    self._body_left = int(value.strip())
                elif name == b"transfer-encoding":
                    self._lost = True


@dataclass
class Fault:
    kind: str  # "cut" or "flip"
    after: int
    times: int = 1


class CountingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sent = 0
        self.received = 0
        self.requests: list[bytes] = []
        self.fault: Fault | None = None
        self.upload_rate: float | None = None  # bytes/s from client to server, if limited
        self._paced_until = 0.0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset_counts(self) -> None:
        with self._lock:
            self.sent = self.received = 0
            self.requests.clear()

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        started.set()
        self._loop.run_forever()

    def _take_fault(self) -> Fault | None:
        with self._lock:
            fault = self.fault
            if fault is None or fault.times <= 0:
                return None
            fault.times -= 1
            return Fault(fault.kind, fault.after)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        fault = self._take_fault()

        heads = _RequestHeads(self.requests, self._lock)

        async def upstream() -> None:
            while data := await reader.read(1024 * 1024):
                with self._lock:
                    self.sent += len(data)
                heads.feed(data)
                up_writer.write(data)
                await up_writer.drain()
                if self.upload_rate:  # one budget shared by every connection
                    now = self._loop.time()
                    self._paced_until = max(now, self._paced_until) + len(data) / self.upload_rate
                    await asyncio.sleep(self._paced_until - now)
            with contextlib.suppress(OSError):
                up_writer.write_eof()

        async def downstream() -> None:
            done = 0
            while data := await up_reader.read(1024 * 1024):
                if fault is not None and done <= fault.after < done + len(data):
                    at = fault.after - done
                    if fault.kind == "cut":
                        writer.write(data[:at])
                        await writer.drain()
                        with self._lock:
                            self.received += at
                        raise ConnectionResetError("cut by the proxy")
                    flipped = bytearray(data)
                    flipped[at] ^= 0xFF
                    data = bytes(flipped)
                with self._lock:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
                done += len(data)
            writer.close()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            pass  # the proxy is closing: end quietly
        finally:
            for t in tasks:
                t.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.transport.abort()
