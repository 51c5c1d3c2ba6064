"""Slow clients: a trickling body neither blocks other clients nor holds the server."""

from __future__ import annotations

import os
import socket
import threading
import time

import httpx
import pytest

from tests.server.conftest import AUTH_HEADER, ServerFactory
from tests.server.test_crash import _s3_signed

pytestmark = pytest.mark.server


def _stall(port: int, head: str, *, until: bytes) -> bytes:
    """Send `head` (the request line and headers) for a 1 MB body, 100 bytes of it, then
    nothing: the server must give up on the body after its timeout. What it answered,
    read until `until` (or an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"{head}Content-Length: 1000000\r\n\r\n".encode())
        sock.sendall(b"x" * 100)
        sock.settimeout(20)
        received = b""
        try:
            while until not in received and (chunk := sock.recv(4096)):
                received += chunk
        except OSError as exc:
            received += repr(exc).encode()
        return received


def test_trickling_body_does_not_stop_others_and_is_cut_off(make_server: ServerFactory) -> None:
    server = make_server({"BODY_TIMEOUT_SECONDS": "2"})
    stop = threading.Event()
    answer: list[bytes] = []

    def trickle() -> None:
        head = (
            f"PUT /api/v1/objects/artifacts/slow.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n{AUTH_HEADER}"
        )
        answer.append(_stall(server.port, head, until=b"}"))
        stop.set()

    slow = threading.Thread(target=trickle)
    slow.start()
    time.sleep(0.3)
    with server.client() as client:
        # Another client is served while the slow body is pending.
        started = time.monotonic()
        for i in range(5):
            assert (
                client.put(f"/api/v1/objects/artifacts/fast-{i}.bin", content=b"ok").status_code
                == 200
            )
            assert client.get(f"/api/v1/download/artifacts/fast-{i}.bin").content == b"ok"
        assert time.monotonic() - started < 5
        assert not stop.is_set()  # the slow one is still pending meanwhile
        slow.join(timeout=30)
        assert stop.is_set()
        assert answer and b"408" in answer[0].split(b"\r\n", 1)[0], answer
        assert b"RequestTimeout" in answer[0]
        assert client.get("/api/v1/download/artifacts/slow.bin").status_code == 404
        temp = server.data_dir / "blobs" / ".tmp"
        assert not temp.exists() or list(temp.iterdir()) == []


def test_a_stalled_s3_body_is_cut_off_and_answered_in_xml(make_server: ServerFactory) -> None:
    """The S3 endpoint has the same body deadlines as REST (BodyDeadlineMiddleware in
    front of it), answered as an S3 error, with nothing stored."""
    server = make_server({"BODY_TIMEOUT_SECONDS": "2", "S3_PORT": "auto"})
    url, headers = _s3_signed(server, "PUT", "/artifacts/stalled.bin", "UNSIGNED-PAYLOAD")
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = f"PUT /artifacts/stalled.bin HTTP/1.1\r\nHost: 127.0.0.1:{server.s3_port}\r\n{lines}"
    started = time.monotonic()
    received = _stall(server.s3_port, head, until=b"</Error>")
    assert 1.5 < time.monotonic() - started < 20
    assert b" 408 " in received.split(b"\r\n", 1)[0], received
    assert b"<Code>RequestTimeout</Code>" in received
    url, headers = _s3_signed(server, "HEAD", "/artifacts/stalled.bin", "UNSIGNED-PAYLOAD")
    assert httpx.head(url, headers=headers).status_code == 404


# --- deadlines on headers and on the body rate (issue 10) ------------------------------

_DEADLINES = {
    "HEADER_TIMEOUT_SECONDS": "1",
    "BODY_GRACE_SECONDS": "1",
    "BODY_MIN_RATE": "10000",  # bytes/s
    "BODY_TIMEOUT_SECONDS": "30",  # the idle timeout never trips: bytes keep coming
}


class _Exchange:
    """What a hand-driven connection got back: the bytes, whether the server closed the
    connection, and how long after the first byte sent."""

    def __init__(self) -> None:
        self.answer = b""
        self.closed = False
        self.seconds = 0.0

    @property
    def status_line(self) -> bytes:
        return self.answer.split(b"\r\n", 1)[0]


def _trickle(port: int, head: bytes, pieces: list[bytes], gap: float) -> _Exchange:
    """Send `head` then each piece `gap` seconds apart until the server answers; then
    read until it closes the connection (or 10 s pass)."""
    result = _Exchange()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sock.setblocking(False)
        for piece in pieces:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                chunk = None
            if chunk is not None:
                result.answer += chunk
                break
            try:
                sock.sendall(piece)
            except OSError:
                break  # the server closed its end
            time.sleep(gap)
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            while chunk := sock.recv(65536):
                result.answer += chunk
            result.closed = True
        except TimeoutError:
            pass
        except OSError:
            result.closed = True  # reset by the server: closed as well
        result.seconds = time.monotonic() - started
    return result


def _assert_timed_out(exchange: _Exchange, within: float) -> None:
    assert exchange.status_line.startswith(b"HTTP/1.1 408"), exchange.answer
    assert b'"code":"RequestTimeout"' in exchange.answer.replace(b" ", b""), exchange.answer
    assert b"connection: close" in exchange.answer.lower(), exchange.answer
    assert exchange.closed, "the connection stayed open after the 408"
    assert exchange.seconds < within, exchange.seconds


@pytest.mark.parametrize(
    "env",
    [{"HTTP_IMPLEMENTATION": "h11"}, {"HTTP_IMPLEMENTATION": "httptools", "WORKERS": "2"}],
    ids=["h11", "httptools-2-workers"],
)
def test_slow_headers_and_trickled_bodies_get_408_while_others_are_served(
    make_server: ServerFactory, env: dict[str, str]
) -> None:
    server = make_server({**_DEADLINES, **env})
    port = server.port
    auth = AUTH_HEADER.encode()
    slow_cases = {
        # One header byte every 0.2 s: never complete, never idle.
        "headers": (b"G", [bytes([c]) for c in b"ET /health HTTP/1.1\r\nHost: x\r\n" * 4], 0.2),
        # 20000 bytes declared: due by max(1 s, 20000 / 10000) = 2 s; 50 bytes/s sent.
        "declared": (
            b"PUT /api/v1/objects/artifacts/declared.bin HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Length: 20000\r\n\r\n",
            [b"y" * 10] * 100,
            0.2,
        ),
        # Chunked, no length: under 10000 bytes/s on average once the 1 s grace is over.
        "chunked": (
            b"PUT /api/v1/objects/artifacts/chunked.bin HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Transfer-Encoding: chunked\r\n\r\n",
            [b"a\r\n" + b"z" * 10 + b"\r\n"] * 100,
            0.2,
        ),
        # A small JSON body read whole before the route runs: due by the grace period.
        "json": (
            b"POST /api/v1/buckets HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Type: application/json\r\nContent-Length: 300\r\n\r\n",
            [bytes([c]) for c in b'{"name": "slow-bucket"' + b" " * 300],
            0.1,
        ),
    }
    results: dict[str, _Exchange] = {}

    def run(name: str) -> None:
        head, pieces, gap = slow_cases[name]
        results[name] = _trickle(port, head, pieces, gap)

    threads = [threading.Thread(target=run, args=(name,)) for name in slow_cases]
    for thread in threads:
        thread.start()
    with server.client() as client:
        # Meanwhile, normal clients are served, including a keep-alive connection that
        # idles longer than the header deadline between two requests.
        payload = os.urandom(512 * 1024)
        assert (
            client.put("/api/v1/objects/artifacts/normal.bin", content=payload).status_code == 200
        )
        chunks = iter([payload[:100_000], payload[100_000:]])  # no length: chunked
        r = client.put("/api/v1/objects/artifacts/chunked-ok.bin", content=chunks)
        assert r.status_code == 200, r.text
        time.sleep(1.5)
        for i in range(3):
            r = client.put(f"/api/v1/objects/artifacts/fast-{i}.bin", content=b"ok")
            assert r.status_code == 200, r.text
        assert client.get("/api/v1/download/artifacts/normal.bin").content == payload
        assert client.get("/api/v1/download/artifacts/chunked-ok.bin").content == payload
        for thread in threads:
            thread.join(timeout=30)
        _assert_timed_out(results["headers"], within=3)
        assert b"headers" in results["headers"].answer
        _assert_timed_out(results["declared"], within=4)
        _assert_timed_out(results["chunked"], within=3)
        _assert_timed_out(results["json"], within=3)
        for name in ("declared", "chunked", "json"):  # the body's deadline, not the headers'
            assert b"the body" in results[name].answer, results[name].answer
        # Nothing stored: no object, no bucket, no temp file.
        for key in ("declared.bin", "chunked.bin"):
            assert client.get(f"/api/v1/download/artifacts/{key}").status_code == 404
        assert client.get("/api/v1/buckets/slow-bucket").status_code == 404
        temp = server.data_dir / "blobs" / ".tmp"
        assert not temp.exists() or list(temp.iterdir()) == []
        # And the server still serves.
        assert client.get("/api/v1/download/artifacts/fast-0.bin").content == b"ok"


def test_an_early_refusal_closes_the_connection(make_server: ServerFactory) -> None:
    # A 401 sent before the body: a client that honours `Expect: 100-continue` never
    # sends it, so keeping the connection would read its next request as this body.
    server = make_server({})
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /api/v1/objects/artifacts/early.bin HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 40\r\nExpect: 100-continue\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes its side
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401"), answer[:200]
    assert b"connection: close" in head
    # A request without a body keeps its connection.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        sock.settimeout(5)
        answer = b""
        while answer.count(b"HTTP/1.1 200") < 2:
            answer += sock.recv(4096)
    assert b"connection: close" not in answer.lower()
