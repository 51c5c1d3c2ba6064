"""The client side: 1 GiB transfers over http.client, 4 KiB requests over asyncio.

Bulk bodies are streamed from `disk.chunks` (one reused 1 MiB buffer) with an explicit
Content-Length, so the client neither buffers nor hashes anything. Small requests use a
minimal keep-alive HTTP/1.1 client on uvloop (when installed): the service's client
(httpx) costs several times more CPU per request, and the client shares the two cores
with the server. `nullserver.py` measures this client's own ceiling.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from disk import MiB, chunks

try:
    import uvloop
except ImportError:  # plain asyncio is slower but works
    uvloop = None


class Target(NamedTuple):
    """Where requests go, and the bearer token they carry (ignored when auth is off)."""

    host: str
    port: int
    token: str

    def connect(self, timeout: float = 600) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _check(resp: http.client.HTTPResponse, what: str) -> dict[str, Any]:
    body = resp.read()
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"{what}: HTTP {resp.status}: {body[:500]!r}")
    return json.loads(body) if body.startswith(b"{") else {}


def _send_streamed(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    headers: dict[str, str],
    parts: Iterator[bytes | memoryview],
) -> None:
    conn.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    assert conn.sock is not None
    try:
        for part in parts:
            conn.sock.sendall(part)
    except (BrokenPipeError, ConnectionResetError) as exc:
        # The server answered early (an error) and closed: say what it answered.
        try:
            resp = conn.getresponse()
            detail = f"HTTP {resp.status}: {resp.read()[:500]!r}"
        except (OSError, http.client.HTTPException):
            detail = "no answer"
        raise RuntimeError(f"{method} {path}: the server stopped reading ({detail})") from exc


def put_raw(target: Target, path: str, size: int) -> tuple[float, dict[str, Any]]:
    """PUT `size` bytes as the raw body; seconds until the answer, and the answer."""
    conn = target.connect()
    try:
        start = time.perf_counter()
        headers = target.auth | {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        _send_streamed(conn, "PUT", path, headers, chunks(size))
        answer = _check(conn.getresponse(), f"PUT {path}")
        return time.perf_counter() - start, answer
    finally:
        conn.close()


def post_form(
    target: Target, path: str, fields: dict[str, str], filename: str, size: int
) -> tuple[float, dict[str, Any]]:
    """POST a multipart form (`fields`, then a `file` part of `size` bytes), streamed."""
    boundary = "tfbench-" + secrets.token_hex(16)
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head.encode()) + size + len(tail)
    headers = target.auth | {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),
    }

    def body() -> Iterator[bytes | memoryview]:
        yield head.encode()
        yield from chunks(size)
        yield tail

    conn = target.connect()
    try:
        start = time.perf_counter()
        _send_streamed(conn, "POST", path, headers, body())
        answer = _check(conn.getresponse(), f"POST {path}")
        return time.perf_counter() - start, answer
    finally:
        conn.close()


def get(target: Target, path: str, size: int, chunk_size: int = 4 * MiB) -> float:
    """GET `path`, reading the body in `chunk_size` pieces and discarding it; seconds."""
    buf = bytearray(chunk_size)
    conn = target.connect()
    try:
        start = time.perf_counter()
        conn.request("GET", path, headers=target.auth)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {resp.status}: {resp.read()[:500]!r}")
        total = 0
        while n := resp.readinto(buf):
            total += n
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    if total != size:
        raise RuntimeError(f"GET {path}: {total} bytes instead of {size}")
    return elapsed


def delete(target: Target, path: str) -> None:
    conn = target.connect(timeout=60)
    try:
        conn.request("DELETE", path, headers=target.auth)
        _check(conn.getresponse(), f"DELETE {path}")
    finally:
        conn.close()


# --- small objects ----------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for these requests."""

    def __init__(self, target: Target) -> None:
        self.host, self.port = target.host, target.port
        self._auth = f"Authorization: Bearer {target.token}\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._auth}"
        if body is not None:
            head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = (await self._reader.readuntil(b"\r\n\r\n")).lower()
        status = int(raw[9:12])
        at = raw.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"{method} {path}: a response without Content-Length")
        length = int(raw[at + 17 : raw.index(b"\r\n", at + 2)])
        if method != "HEAD":  # a HEAD answer announces the length but sends no body
            await self._reader.readexactly(length)
        if b"\r\nconnection: close\r\n" in raw:
            await self.close()
        return status

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()
            self._reader = self._writer = None


# One request: (method, path, body or None); None when there is nothing left to do.
Request = tuple[str, str, bytes | None]


@dataclass
class Load:
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # paths answered 2xx
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "ops": self.ok,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "ops_per_s": round(self.per_second, 1),
            "p50_ms": round(1000 * lat[len(lat) // 2], 2),
            "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 2),
            "first_error": self.first_error,
        }


async def _hammer(
    target: Target, clients: int, seconds: float, next_request: Callable[[], Request | None]
) -> Load:
    """`clients` connections send `next_request()`s back to back for `seconds`."""
    load = Load()
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        conn = Connection(target)
        try:
            while time.perf_counter() < deadline and (req := next_request()) is not None:
                sent = time.perf_counter()
                status = await conn.request(*req)
                load.latencies.append(time.perf_counter() - sent)
                if 200 <= status < 300:
                    load.ok += 1
                    load.done.append(req[1])
                else:
                    load.errors += 1
                    load.first_error = load.first_error or f"{req[0]} {req[1]}: HTTP {status}"
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    load.seconds = time.perf_counter() - start
    return load


def hammer(
    target: Target, clients: int, seconds: float, next_request: Callable[[], Request | None]
) -> Load:
    """`clients` keep-alive connections send `next_request()`s back to back for `seconds`
    (or until it returns None)."""
    factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_hammer(target, clients, seconds, next_request))


def small_puts(prefix: str, size: int = 4096) -> Callable[[], Request]:
    """PUTs of distinct `size`-byte objects at `prefix/000000.bin`, `prefix/000001.bin`, ..."""
    buf = bytearray(os.urandom(size))
    nonce = random.getrandbits(64)
    counter = iter(range(10**9))

    def next_request() -> Request:
        n = next(counter)
        struct.pack_into("<QQ", buf, 0, nonce, n)
        return "PUT", f"{prefix}/{n:06d}.bin", bytes(buf)

    return next_request


def small_gets(paths: list[str]) -> Callable[[], Request]:
    return lambda: ("GET", random.choice(paths), None)


def small_heads(paths: list[str]) -> Callable[[], Request]:
    return lambda: ("HEAD", random.choice(paths), None)


def small_deletes(paths: list[str]) -> Callable[[], Request | None]:
    todo = iter(paths)
    return lambda: ("DELETE", path, None) if (path := next(todo, None)) else None
