"""The SDK and the CLI against a fresh server: a multipart upload through `Client`
(4 parts in flight) and `tfstorage cp -r` of many 4 KiB files.

Compared, in the same round, with the raw PUT of the same size (the `put` phase) and
with the disk's pace for durable 4 KiB files (`disk_small`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import disk
from service import Server
from tfstorage.client import Client

BUCKET = "artifacts"
MiB = 1024 * 1024


def _write_payload(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for piece in disk.chunks(size):
            f.write(piece)


def multipart(server: Server, root: Path, n: int, size: int) -> dict[str, float]:
    """`Client.upload_file` of `size` bytes in 16 MiB parts, 4 in flight (MB/s).

    The file is written first and stays in the page cache, as a checkpoint just saved
    would be; the SDK reads it and SHA-256s the whole file (new parts go without a hash
    of their own), and the server hashes each part and the whole object and checks the
    file's SHA-256 before the object becomes visible."""
    path = root / f"sdk-{n}.bin"
    _write_payload(path, size)
    try:
        with Client(
            f"http://{server.host}:{server.port}", server.token, part_size=16 * MiB, concurrency=4,
            multipart_threshold=0, state_dir=root / "sdk-state",
        ) as c:  # fmt: skip
            started = time.perf_counter()
            info = c.upload_file(path, BUCKET, f"bench/sdk-{n}.bin")
            seconds = time.perf_counter() - started
            c.delete(BUCKET, info.key, version_id=info.file_id)
    finally:
        path.unlink(missing_ok=True)
    return {"sdk_multipart": size / seconds / 1e6}


def small_tree(server: Server, root: Path, n: int, files: int) -> dict[str, float]:
    """`tfstorage cp -r -q` of `files` 4 KiB files in 10 directories (files/s)."""
    tree = root / f"tree-{n}"
    for i in range(files):
        path = tree / f"d{i % 10}" / f"f{i:06}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(16) + bytes(4080))
    env = os.environ | {
        "TFSTORAGE_URL": f"http://{server.host}:{server.port}",
        "TFSTORAGE_TOKEN": server.token,
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_CONFIG_HOME": str(root / "config"),
    }
    command = [sys.executable, "-m", "tfstorage", "cp", "-r", "-q", "--json", str(tree)]
    try:
        started = time.perf_counter()
        done = subprocess.run(
            [*command, f"tfs://{BUCKET}/bench/tree-{n}"], env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"tfstorage cp -r failed: {done.stderr[-2000:]}")
    return {"cp_small": files / seconds}
