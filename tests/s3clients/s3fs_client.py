"""The s3fs and fsspec side of test_s3fs.py, run by the python of .venv-aiobotocore (s3fs is
not in the test venv: see aiobotocore-tools.txt). It needs nothing of the repository.

    python s3fs_client.py ENDPOINT_URL REGION < steps.json

with the key pair in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. steps.json is a list of
[operation, {arguments}], run in order by one S3FileSystem; stdout is the JSON list of their
results. Bytes read back are answered as their SHA-256 and size, for the test to compare
with what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import s3fs


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _operations(options: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    # A fresh instance, not one fsspec cached for the same arguments.
    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)

    def read(path: str, block_size: int, reads: list[tuple[int, int, int]]) -> list[Any]:
        """Each read seeks (offset, whence) and reads `size` bytes (-1: to the end)."""
        with fs.open(path, "rb", block_size=block_size) as f:
            results = []
            for offset, whence, size in reads:
                f.seek(offset, whence)
                results.append(_digest(f.read(size)))
            return results

    def write(path: str, local: str, block_size: int, chunk: int) -> None:
        data = Path(local).read_bytes()
        with fs.open(path, "wb", block_size=block_size) as f:
            for start in range(0, len(data), chunk):
                f.write(data[start : start + chunk])

    def fsspec_write_text(url: str, text: str) -> None:
        # fsspec.open with an s3:// URL and storage options: how pandas, datasets, etc. call it.
        with fsspec.open(url, "w", **options) as f:
            f.write(text)

    def fsspec_read(url: str) -> dict[str, Any]:
        with fsspec.open(url, "rb", **options) as f:
            return _digest(f.read())

    return {
        "mkdir": fs.mkdir,
        "put": lambda local, path: fs.put(local, path, recursive=True),
        "get": lambda path, local: fs.get(path, local, recursive=True),
        "rm": lambda path: fs.rm(path, recursive=True),
        "ls": lambda path: sorted(fs.ls(path, detail=False)),
        "ls_detail": lambda path: {
            e["name"]: {"size": e["size"], "type": e["type"]}
            for e in fs.ls(path, detail=True, refresh=True)
        },
        "find": lambda path: sorted(fs.find(path)),
        "info": lambda path: {k: v for k, v in fs.info(path).items() if k in ("size", "type")},
        "cat_file": lambda path, start, end: _digest(fs.cat_file(path, start=start, end=end)),
        "read": read,
        "write": write,
        "fsspec_write_text": fsspec_write_text,
        "fsspec_read": fsspec_read,
    }


def main() -> None:
    endpoint_url, region = sys.argv[1:3]
    options = {
        "key": os.environ["AWS_ACCESS_KEY_ID"],
        "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": endpoint_url, "region_name": region},
    }
    operations = _operations(options)
    steps = json.load(sys.stdin)
    json.dump([operations[name](**arguments) for name, arguments in steps], sys.stdout)


if __name__ == "__main__":
    main()
