"""A worker's memory stays bounded while big objects move through the S3 door: the
peak growth is the parts in flight plus buffers, not a heap that keeps every freed chunk
(tfstorage/malloc.py)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient

from tests.server.conftest import ServerProcess

MiB = 1024 * 1024
SIZE = 96 * MiB  # under the default MAX_FILE_SIZE (100 MB)
PART = 16 * MiB
# Two 16 MiB parts in flight plus the read and hashing buffers come to ~30 MiB; a heap
# that keeps freed 1 MiB chunks grew 60-70 MiB on the same transfer.
ALLOWED_GROWTH = 45 * MiB


class _Payload(io.RawIOBase):
    """`SIZE` incompressible bytes, generated as read: one random MiB whose first bytes
    carry the offset, so no part repeats another."""

    def __init__(self, block: bytes) -> None:
        self._block = block
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), SIZE - self._offset, MiB - self._offset % MiB)
        start = self._offset % MiB
        piece = bytearray(self._block[start : start + n])
        if start == 0 and n >= 8:
            piece[:8] = self._offset.to_bytes(8, "big")
        buffer[:n] = piece
        self._offset += n
        return n


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} missing")


def test_multipart_upload_and_download_keep_memory_bounded(
    server: ServerProcess, s3: BaseClient
) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    s3.create_bucket(Bucket="memory")
    config = TransferConfig(multipart_chunksize=PART, multipart_threshold=PART, max_concurrency=2)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
    before = _status(pid, "VmRSS")

    block = os.urandom(MiB)
    s3.upload_fileobj(io.BufferedReader(_Payload(block), MiB), "memory", "big.bin", Config=config)
    digest = hashlib.sha256()

    class _Sink(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: bytes) -> int:  # type: ignore[override]
            digest.update(data)
            return len(data)

    s3.download_fileobj("memory", "big.bin", _Sink(), Config=TransferConfig(max_concurrency=1))
    growth = _status(pid, "VmHWM") - before

    expected, payload = hashlib.sha256(), io.BufferedReader(_Payload(block), MiB)
    while piece := payload.read(MiB):
        expected.update(piece)
    assert digest.hexdigest() == expected.hexdigest()
    print(f"peak RSS growth moving {SIZE // MiB} MiB each way: {growth / MiB:.1f} MiB")
    assert growth < ALLOWED_GROWTH, growth / MiB
