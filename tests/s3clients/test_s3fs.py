"""s3fs / fsspec against the S3 endpoint: put, get, ls, find, open with range reads, and
writes through `open`, each checked by SHA-256 through the REST API (and the reverse).

s3fs runs in .venv-aiobotocore (its aiobotocore pins an older botocore than the test venv's
boto3): s3fs_client.py there makes the calls and answers what it saw, in JSON, and the
assertions are made here."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.s3clients.conftest import REGION, RestDoor, file_sha256, sha256
from tests.s3clients.tools_venv import tools_bin
from tests.server.conftest import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

BUCKET = "s3fs-test"
CLIENT = Path(__file__).with_name("s3fs_client.py")


def digest(data: bytes) -> dict[str, Any]:
    """What s3fs_client.py answers for bytes it read."""
    return {"sha256": sha256(data), "size": len(data)}


@dataclass(frozen=True)
class S3fs:
    """One S3FileSystem per call, in a process of the tools venv, running `steps` in order."""

    server: ServerProcess
    env: dict[str, str]

    def __call__(self, *steps: tuple[str, dict[str, Any]]) -> list[Any]:
        result = subprocess.run(
            [str(tools_bin() / "python"), str(CLIENT), self.server.s3_url, REGION],
            input=json.dumps(steps),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, (
            f"{[name for name, _ in steps]}: {result.stderr[-4000:]}\n{self.server.log_tail()}"
        )
        answers: list[Any] = json.loads(result.stdout)
        return answers


@pytest.fixture(scope="module")
def fs(server: ServerProcess, s3_keys: tuple[str, str]) -> S3fs:
    key, secret = s3_keys
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_EC2_METADATA_DISABLED="true"
    )
    filesystem = S3fs(server, env)
    filesystem(("mkdir", {"path": BUCKET}))
    return filesystem


def test_put_get_ls_find(fs: S3fs, rest: RestDoor, tmp_path: Path) -> None:
    local = tmp_path / "run"
    files = {"a.bin": os.urandom(1234), "sub/b.bin": os.urandom(70_000), "sub/deep/c.txt": b"c"}
    for name, data in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    fs(("put", {"local": f"{local}/", "path": f"{BUCKET}/run/"}))
    assert rest.listing(BUCKET, "run/") == {f"run/{n}": sha256(d) for n, d in files.items()}
    for name, data in files.items():
        assert rest.sha256(BUCKET, f"run/{name}") == sha256(data)

    back = tmp_path / "back"
    listing, detail, found, _, _ = fs(
        ("ls", {"path": f"{BUCKET}/run"}),
        ("ls_detail", {"path": f"{BUCKET}/run/sub"}),
        ("find", {"path": f"{BUCKET}/run"}),
        ("get", {"path": f"{BUCKET}/run/", "local": f"{back}/"}),
        ("rm", {"path": f"{BUCKET}/run"}),
    )
    assert listing == [f"{BUCKET}/run/a.bin", f"{BUCKET}/run/sub"]
    assert detail[f"{BUCKET}/run/sub/b.bin"] == {"size": 70_000, "type": "file"}
    assert detail[f"{BUCKET}/run/sub/deep"]["type"] == "directory"
    assert found == sorted(f"{BUCKET}/run/{n}" for n in files)
    for name, data in files.items():
        assert file_sha256(back / name) == sha256(data)
    assert rest.listing(BUCKET, "run/") == {}


def test_open_with_range_reads(fs: S3fs, rest: RestDoor) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    rest.put(BUCKET, "ranges/blob.bin", data)  # written over REST, read by s3fs
    path = f"{BUCKET}/ranges/blob.bin"
    reads, head, info = fs(
        (
            "read",
            {
                "path": path,
                "block_size": 256 * 1024,
                "reads": [
                    (1_000_000, os.SEEK_SET, 10),
                    (-7, os.SEEK_END, -1),
                    (0, os.SEEK_SET, -1),
                ],
            },
        ),
        ("cat_file", {"path": path, "start": 5, "end": 50}),
        ("info", {"path": path}),
    )
    assert reads == [digest(data[1_000_000:1_000_010]), digest(data[-7:]), digest(data)]
    assert head == digest(data[5:50])
    assert info == {"size": len(data), "type": "file"}


def test_open_for_writing_and_fsspec_urls(fs: S3fs, rest: RestDoor, tmp_path: Path) -> None:
    # Written in 5 MiB blocks: a multipart upload of 3 parts.
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "ckpt.pt").write_bytes(data)
    _, _, read_back = fs(
        (
            "write",
            {
                "path": f"{BUCKET}/w/ckpt.pt",
                "local": str(tmp_path / "ckpt.pt"),
                "block_size": 5 * 1024 * 1024,
                "chunk": 1 << 20,
            },
        ),
        # fsspec.open with an s3:// URL and storage options, as pandas, datasets, etc. call it.
        (
            "fsspec_write_text",
            {"url": f"s3://{BUCKET}/w/notes.txt", "text": "epoch 3: loss 0.12\n"},
        ),
        ("fsspec_read", {"url": f"s3://{BUCKET}/w/ckpt.pt"}),
    )
    assert rest.sha256(BUCKET, "w/ckpt.pt") == sha256(data)
    assert rest.sha256(BUCKET, "w/notes.txt") == sha256(b"epoch 3: loss 0.12\n")
    assert read_back == digest(data)
