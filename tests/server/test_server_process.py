"""The harness itself: a server is ready only when its own process answers on its port.

Once in CI, another test's server took the free port between `free_port()` and the
bind; it answered the readiness probe (same admin token) while ours failed to bind, and
a presigned link from the real instance was refused by the stranger with its own key.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.server import conftest
from tests.server.conftest import ServerProcess, free_port, holds_port

pytestmark = pytest.mark.server


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"healthy","stranger":true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stranger() -> Iterator[int]:
    """Another process's server answering /health 200 on a loopback port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_stranger_on_the_port_is_not_taken_for_the_server(
    stranger: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([stranger])
    monkeypatch.setattr(conftest, "free_port", lambda: next(ports, None) or free_port())
    server = ServerProcess(tmp_path / "data", log_dir=tmp_path).start()
    try:
        assert server.port != stranger
        assert holds_port(server.proc.pid, server.port)  # type: ignore[union-attr]
        assert not holds_port(server.proc.pid, stranger)  # type: ignore[union-attr]
        with server.client() as c:
            assert "stranger" not in c.get("/health").json()
        assert "already in use" in (tmp_path / "server-data-1.log").read_text().lower()
    finally:
        server.stop()
