"""A real server streams an archive far larger than the memory it is allowed to grow by."""

from __future__ import annotations

import hashlib
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import ServerFactory, ServerProcess

pytestmark = pytest.mark.server

MiB = 1024 * 1024
FILES = 10
FILE_SIZE = 32 * MiB  # 320 MiB in all
ALLOWED_GROWTH = 60 * MiB


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise AssertionError(f"{field} missing from /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    # "5" resets VmHWM to the current RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def file_data(i: int) -> bytes:
    return random.Random(i).randbytes(FILE_SIZE)  # incompressible, like most ML data


def pieces(data: bytes, size: int = MiB) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def upload(server: ServerProcess) -> dict[str, str]:
    """FILES entries of FILE_SIZE: two distinct uploads, copied server-side (dedup keeps
    the disk and the test short; every entry is still read and verified in full)."""
    digests = {}
    with server.client(timeout=120) as client:
        for i in range(2):
            data = file_data(i)
            r = client.put(f"/api/v1/objects/artifacts/seed{i}/part.bin", content=pieces(data))
            assert r.status_code == 200, r.text
            for n in range(i, FILES, 2):
                copy = {"bucket": "artifacts", "prefix": f"seed{i}/", "dest_bucket": "artifacts"}
                r = client.post("/api/v1/batch/copy", json={**copy, "dest_prefix": f"big/{n:02}-"})
                assert r.status_code == 200 and r.json()["copied"] == 1, r.text
                digests[f"{n:02}-part.bin"] = hashlib.sha256(data).hexdigest()
    return digests


def test_archive_streams_in_bounded_memory(make_server: ServerFactory) -> None:
    server = make_server({"MAX_FILE_SIZE": "64MB"})
    assert server.proc is not None
    pid = server.proc.pid
    digests = upload(server)

    with server.client(timeout=120) as client:
        # tar: parsed as a stream, each entry's bytes checked against its upload.
        reset_peak(pid)
        before = proc_status(pid, "VmRSS")
        with client.stream(
            "GET", "/api/v1/archive/artifacts", params={"prefix": "big/", "format": "tar"}
        ) as r:
            assert r.status_code == 200
            seen = {}
            with tarfile.open(fileobj=_Reader(r.iter_bytes(MiB)), mode="r|") as archive:
                for member in archive:
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    digest = hashlib.sha256()
                    while block := extracted.read(MiB):
                        digest.update(block)
                    seen[member.name] = digest.hexdigest()
        assert seen == digests
        tar_growth = proc_status(pid, "VmHWM") - before

        # zip: counted as it streams; its end record closes the archive.
        reset_peak(pid)
        before = proc_status(pid, "VmRSS")
        total = 0
        tail = b""
        with client.stream("GET", "/api/v1/archive/artifacts", params={"prefix": "big/"}) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes(MiB):
                total += len(chunk)
                tail = (tail + chunk)[-64:]
        zip_growth = proc_status(pid, "VmHWM") - before

    assert total > FILES * FILE_SIZE
    assert b"PK\x05\x06" in tail  # the end of central directory record
    print(f"RSS growth while streaming {FILES * FILE_SIZE // MiB} MiB: "
          f"tar {tar_growth / MiB:.1f} MiB, zip {zip_growth / MiB:.1f} MiB")  # fmt: skip
    assert tar_growth < ALLOWED_GROWTH, tar_growth
    assert zip_growth < ALLOWED_GROWTH, zip_growth


class _Reader:
    """A file-like view of a byte iterator, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out
