"""A TLS terminator in front of a test server's S3 port, with a CA made by trustme.

boto3 sends its default checksums as aws-chunked trailers only over HTTPS (botocore's
httpchecksum: "we'll only use trailers over TLS"); over plain HTTP it puts them in a
header. To test the default a user gets against AWS, a client must speak TLS to the
service: deployments put TLS in a proxy in front of it, and so does this test. Bytes are
relayed as they are, so the Host header (and the signature over it) reach the server as
the client sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import trustme


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(1 << 18):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.contextmanager
def tls_terminator(upstream_port: int, workdir: Path) -> Iterator[tuple[str, str]]:
    """Serve TLS on a free loopback port; yields (https base URL, CA bundle path)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    bundle = workdir / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        with contextlib.suppress(asyncio.CancelledError):  # the terminator stopping
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def start() -> asyncio.Server:
        server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
        port.append(server.sockets[0].getsockname()[1])
        return server

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        server.close()
        pending = asyncio.all_tasks(loop)
        for task in pending:  # connections a client left open
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, name="tls-terminator", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"https://127.0.0.1:{port[0]}", str(bundle)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
