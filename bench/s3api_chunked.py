"""aws-chunked decoding speed against this machine's SHA-256, the floor of signed chunks.

    .venv/bin/python bench/s3api_chunked.py [--mib 256]

A signed chunk must be hashed (SHA-256) before its signature can be checked, so the
decoder can at best match one core's SHA-256; the ratio says how close it comes.
Unsigned chunks need no hash: their figure is against merely handing the pieces over.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator

from tfstorage.s3api import chunked

KEY = os.urandom(32)
DATE, SCOPE, SEED = "20260101T000000Z", "20260101/us-east-1/s3/aws4_request", "0" * 64
PIECE = 64 * 1024  # what an ASGI server typically hands over


def _sign(previous: str, data: bytes) -> str:
    empty = hashlib.sha256(b"").hexdigest()
    text = f"AWS4-HMAC-SHA256-PAYLOAD\n{DATE}\n{SCOPE}\n{previous}\n{empty}\n"
    text += hashlib.sha256(data).hexdigest()
    return hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()


def _body(total: int, chunk: int, signed: bool) -> bytes:
    data, parts, previous = os.urandom(chunk), [], SEED
    for _ in range(total // chunk):
        if signed:
            previous = _sign(previous, data)
            parts.append(f"{chunk:x};chunk-signature={previous}\r\n".encode() + data + b"\r\n")
        else:
            parts.append(f"{chunk:x}\r\n".encode() + data + b"\r\n")
    last = f"0;chunk-signature={_sign(previous, b'')}\r\n" if signed else "0\r\n"
    return b"".join(parts) + last.encode() + b"\r\n"


async def _feed(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), PIECE):
        yield bytes(view[start : start + PIECE])


async def _seconds(body: bytes, total: int, signer: chunked.ChunkSigner | None) -> float:
    start = time.perf_counter()
    stream = chunked.decode(_feed(body), decoded_length=total, signer=signer, trailer=None)
    async for _ in stream:
        pass
    return time.perf_counter() - start


async def _feeding(body: bytes) -> float:
    start = time.perf_counter()
    async for _ in _feed(body):
        pass
    return time.perf_counter() - start


async def main(total: int) -> None:
    data = os.urandom(total)
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    sha = time.perf_counter() - start
    print(f"sha256, one core: {total / sha / 1e6:.0f} MB/s")
    signer = chunked.ChunkSigner(KEY, DATE, SCOPE, SEED)
    for chunk in (64 * 1024, 1024 * 1024):
        body = _body(total, chunk, signed=True)
        took = await _seconds(body, total, signer)
        print(
            f"signed, {chunk // 1024} KiB chunks: {total / took / 1e6:.0f} MB/s "
            f"= {sha / took:.2f} x sha256"
        )
        body = _body(total, chunk, signed=False)
        took, feeding = await _seconds(body, total, None), await _feeding(body)
        print(
            f"unsigned, {chunk // 1024} KiB chunks: {total / took / 1e6:.0f} MB/s "
            f"= {feeding / took:.2f} x handing the pieces over"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    asyncio.run(main(parser.parse_args().mib * 1024 * 1024))
