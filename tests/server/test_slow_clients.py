"""Slow clients: a trickling body neither blocks other clients nor holds the server."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.server.conftest import AUTH_HEADER, ServerFactory

pytestmark = pytest.mark.server


def test_trickling_body_does_not_stop_others_and_is_cut_off(make_server: ServerFactory) -> None:
    server = make_server({"BODY_TIMEOUT_SECONDS": "2"})
    stop = threading.Event()
    answer: list[bytes] = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                (
                    "PUT /api/v1/objects/artifacts/slow.bin HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\n{AUTH_HEADER}Content-Length: 1000000\r\n\r\n"
                ).encode()
            )
            sock.sendall(b"x" * 100)
            # Then nothing: the server must give up on this body after its timeout.
            sock.settimeout(20)
            received = b""
            try:
                while b"}" not in received and (chunk := sock.recv(4096)):
                    received += chunk
            except OSError as exc:
                received += repr(exc).encode()
            answer.append(received)
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
