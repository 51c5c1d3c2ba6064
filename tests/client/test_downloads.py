"""Must-show 2: an interrupted download resumes with Range and is verified; a
truncated or corrupted one is an error and never appears as the destination file.

A real server behind a proxy that cuts or corrupts responses, and counts the bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.proxy import CountingProxy, Fault
from tests.server.conftest import ADMIN_TOKEN, ServerFactory, ServerProcess
from tfstorage.client import ChecksumMismatch, Client, IncompleteDownload
from tfstorage.client.downloads import partial_path

pytestmark = pytest.mark.server
SIZE = 24 * 1024 * 1024


@pytest.fixture
def server(make_server: ServerFactory) -> ServerProcess:
    return make_server({})


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[CountingProxy]:
    p = CountingProxy(server.port)
    yield p
    p.close()


@pytest.fixture
def stored(server: ServerProcess) -> bytes:
    data = os.urandom(SIZE)
    with server.client() as c:
        assert c.put("/api/v1/objects/artifacts/ckpt/w.bin", content=data).status_code == 200
    return data


def _client(proxy: CountingProxy, retries: int) -> Client:
    return Client(proxy.url, ADMIN_TOKEN, retries=retries)


def _ranges(proxy: CountingProxy) -> list[str]:
    found = []
    for head in proxy.requests:
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"range:"):
                found.append(line.split(b":", 1)[1].strip().decode())
    return found


def test_a_cut_download_resumes_with_range_in_the_same_call(
    proxy: CountingProxy, stored: bytes, tmp_path: Path
) -> None:
    proxy.fault = Fault("cut", after=SIZE // 2)
    dest = tmp_path / "w.bin"
    with _client(proxy, retries=2) as c:
        c.download_file("artifacts", "ckpt/w.bin", dest)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(stored).digest()
    ranges = _ranges(proxy)
    assert len(ranges) == 1 and ranges[0].startswith("bytes=") and ranges[0].endswith("-")
    resumed_from = int(ranges[0].removeprefix("bytes=").rstrip("-"))
    assert SIZE // 4 < resumed_from <= SIZE // 2
    assert proxy.received < SIZE * 1.2  # the first half was not fetched twice
    assert not partial_path(dest).exists()


def test_an_interrupted_download_is_kept_partial_and_a_later_run_resumes(
    proxy: CountingProxy, stored: bytes, tmp_path: Path
) -> None:
    proxy.fault = Fault("cut", after=SIZE // 2)
    dest = tmp_path / "w.bin"
    with _client(proxy, retries=0) as c, pytest.raises(IncompleteDownload):
        c.download_file("artifacts", "ckpt/w.bin", dest)
    assert not dest.exists()
    kept = partial_path(dest).stat().st_size
    assert 0 < kept <= SIZE // 2

    proxy.reset_counts()
    with _client(proxy, retries=0) as c:
        c.download_file("artifacts", "ckpt/w.bin", dest)
    assert dest.read_bytes() == stored
    assert _ranges(proxy) == [f"bytes={kept}-"]
    assert proxy.received < SIZE - kept + 64 * 1024  # only the rest, plus headers


def test_a_corrupted_download_raises_and_leaves_nothing(
    proxy: CountingProxy, stored: bytes, tmp_path: Path
) -> None:
    proxy.fault = Fault("flip", after=SIZE // 3, times=10)
    dest = tmp_path / "out" / "w.bin"
    with _client(proxy, retries=2) as c, pytest.raises(ChecksumMismatch):
        c.download_file("artifacts", "ckpt/w.bin", dest)
    assert list(dest.parent.iterdir()) == []  # no file, no partial file, no sidecar


def test_a_corrupted_partial_file_is_not_trusted(
    proxy: CountingProxy, stored: bytes, tmp_path: Path
) -> None:
    """A kept prefix that rotted is caught by the final SHA-256, and the next run
    starts over instead of trusting it."""
    proxy.fault = Fault("cut", after=SIZE // 2)
    dest = tmp_path / "w.bin"
    with _client(proxy, retries=0) as c, pytest.raises(IncompleteDownload):
        c.download_file("artifacts", "ckpt/w.bin", dest)
    partial = partial_path(dest)
    with partial.open("r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    with _client(proxy, retries=0) as c, pytest.raises(ChecksumMismatch):
        c.download_file("artifacts", "ckpt/w.bin", dest)
    assert not dest.exists() and not partial.exists()
    with _client(proxy, retries=0) as c:
        c.download_file("artifacts", "ckpt/w.bin", dest)
    assert dest.read_bytes() == stored
