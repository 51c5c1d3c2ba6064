"""A do-nothing HTTP/1.1 server: the client's own ceiling on the same two cores.

`python nullserver.py PORT`. One thread per connection, blocking sockets (the kernel
does the work, not Python): request bodies are read into a scratch buffer and dropped;
GET `/big/<n>` answers n zero bytes, any other GET 4 KiB, anything else a tiny JSON.
"""

from __future__ import annotations

import socketserver
import sys

CHUNK = memoryview(bytes(1024 * 1024))
SMALL = bytes(4096)
JSON = b'{"success": true}'


def _head(length: int, content_type: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (
        content_type,
        length,
    )


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        scratch = memoryview(bytearray(4 * len(CHUNK)))
        sock = self.connection
        while request_line := self.rfile.readline():
            method, path = request_line.split()[:2]
            left = 0
            while (line := self.rfile.readline()).strip():
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    left = int(value)
            while left:
                n = self.rfile.readinto(scratch[: min(left, len(scratch))])
                if not n:
                    return
                left -= n
            if method == b"GET" and path.startswith(b"/big/"):
                size = int(path[5:])
                sock.sendall(_head(size, b"application/octet-stream"))
                for offset in range(0, size, len(CHUNK)):
                    sock.sendall(CHUNK[: min(len(CHUNK), size - offset)])
            elif method == b"GET":
                sock.sendall(_head(len(SMALL), b"application/octet-stream") + SMALL)
            else:
                sock.sendall(_head(len(JSON), b"application/json") + JSON)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    with Server(("127.0.0.1", int(sys.argv[1])), Handler) as server:
        server.serve_forever()
