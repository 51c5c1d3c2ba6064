"""s3fs / fsspec against the S3 endpoint: put, get, ls, find, open with range reads, and
writes through `open`, each checked by SHA-256 through the REST API (and the reverse)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import s3fs

from tests.s3clients.conftest import REGION, RestDoor, file_sha256, sha256
from tests.server.conftest import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

BUCKET = "s3fs-test"


@pytest.fixture(scope="module")
def fs(server: ServerProcess, s3_keys: tuple[str, str]) -> Iterator[s3fs.S3FileSystem]:
    key, secret = s3_keys
    filesystem = s3fs.S3FileSystem(
        key=key,
        secret=secret,
        client_kwargs={"endpoint_url": server.s3_url, "region_name": REGION},
        skip_instance_cache=True,  # a fresh instance per module, not one cached by arguments
    )
    filesystem.mkdir(BUCKET)
    yield filesystem


def test_put_get_ls_find(fs: s3fs.S3FileSystem, rest: RestDoor, tmp_path: Path) -> None:
    local = tmp_path / "run"
    files = {"a.bin": os.urandom(1234), "sub/b.bin": os.urandom(70_000), "sub/deep/c.txt": b"c"}
    for name, data in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    fs.put(str(local) + "/", f"{BUCKET}/run/", recursive=True)
    assert rest.listing(BUCKET, "run/") == {f"run/{n}": sha256(d) for n, d in files.items()}
    for name, data in files.items():
        assert rest.sha256(BUCKET, f"run/{name}") == sha256(data)

    assert sorted(fs.ls(f"{BUCKET}/run", detail=False)) == [
        f"{BUCKET}/run/a.bin",
        f"{BUCKET}/run/sub",
    ]
    detail = {e["name"]: e for e in fs.ls(f"{BUCKET}/run/sub", detail=True, refresh=True)}
    assert detail[f"{BUCKET}/run/sub/b.bin"]["size"] == 70_000
    assert detail[f"{BUCKET}/run/sub/deep"]["type"] == "directory"
    assert sorted(fs.find(f"{BUCKET}/run")) == sorted(f"{BUCKET}/run/{n}" for n in files)

    back = tmp_path / "back"
    fs.get(f"{BUCKET}/run/", str(back) + "/", recursive=True)
    for name, data in files.items():
        assert file_sha256(back / name) == sha256(data)

    fs.rm(f"{BUCKET}/run", recursive=True)
    assert rest.listing(BUCKET, "run/") == {}


def test_open_with_range_reads(fs: s3fs.S3FileSystem, rest: RestDoor) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    rest.put(BUCKET, "ranges/blob.bin", data)  # written over REST, read by s3fs
    with fs.open(f"{BUCKET}/ranges/blob.bin", "rb", block_size=256 * 1024) as f:
        f.seek(1_000_000)
        assert f.read(10) == data[1_000_000:1_000_010]
        f.seek(-7, os.SEEK_END)
        assert f.read() == data[-7:]
        f.seek(0)
        assert sha256(f.read()) == sha256(data)
    assert fs.cat_file(f"{BUCKET}/ranges/blob.bin", start=5, end=50) == data[5:50]
    assert fs.info(f"{BUCKET}/ranges/blob.bin")["size"] == len(data)


def test_open_for_writing_and_fsspec_urls(
    fs: s3fs.S3FileSystem, rest: RestDoor, server: ServerProcess, s3_keys: tuple[str, str]
) -> None:
    # Written in 5 MiB blocks: a multipart upload of 3 parts.
    data = os.urandom(11 * 1024 * 1024)
    with fs.open(f"{BUCKET}/w/ckpt.pt", "wb", block_size=5 * 1024 * 1024) as f:
        for start in range(0, len(data), 1 << 20):
            f.write(data[start : start + (1 << 20)])
    assert rest.sha256(BUCKET, "w/ckpt.pt") == sha256(data)

    # fsspec.open with an s3:// URL and storage options: how pandas, datasets, etc. call it.
    key, secret = s3_keys
    options = {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": server.s3_url, "region_name": REGION},
    }
    with fsspec.open(f"s3://{BUCKET}/w/notes.txt", "w", **options) as f:
        f.write("epoch 3: loss 0.12\n")
    assert rest.sha256(BUCKET, "w/notes.txt") == sha256(b"epoch 3: loss 0.12\n")
    with fsspec.open(f"s3://{BUCKET}/w/ckpt.pt", "rb", **options) as f:
        assert sha256(f.read()) == sha256(data)
