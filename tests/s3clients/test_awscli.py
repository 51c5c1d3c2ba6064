"""aws-cli (v1, from PyPI) against the S3 endpoint: `aws s3` and `aws s3api`, every byte
checked by SHA-256 on both sides and through the REST API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.s3api.test_endpoint_server import new_keys
from tests.s3clients.conftest import RestDoor, file_sha256, sha256
from tests.server.conftest import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

AWS = str(Path(sys.executable).parent / "aws")
BUCKET = "awscli-test"


@pytest.fixture
def aws(server: ServerProcess, client_env: dict[str, str], tmp_path: Path) -> Any:
    def run(*args: str, stdout: bool = True) -> str:
        result = subprocess.run(
            [AWS, "--endpoint-url", server.s3_url, *args],
            env=client_env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"aws {' '.join(args)}: {result.stderr}\n{server.log_tail()}"
        return result.stdout

    return run


def test_cp_ls_and_rm_match_rest(aws: Any, rest: RestDoor, tmp_path: Path) -> None:
    aws("s3", "mb", f"s3://{BUCKET}")
    small = tmp_path / "config.json"
    small.write_bytes(os.urandom(5000))
    big = tmp_path / "weights.bin"  # above aws-cli's 8 MiB threshold: a multipart upload
    big.write_bytes(os.urandom(9 * 1024 * 1024 + 3))
    aws("s3", "cp", str(small), f"s3://{BUCKET}/run-1/config.json")
    aws("s3", "cp", str(big), f"s3://{BUCKET}/run-1/weights.bin")
    assert rest.sha256(BUCKET, "run-1/config.json") == file_sha256(small)
    assert rest.sha256(BUCKET, "run-1/weights.bin") == file_sha256(big)

    listed = aws("s3", "ls", "--recursive", f"s3://{BUCKET}/run-1/")
    sizes = {line.split()[3]: int(line.split()[2]) for line in listed.splitlines()}
    assert sizes == {"run-1/config.json": 5000, "run-1/weights.bin": big.stat().st_size}

    back = tmp_path / "back.bin"
    aws("s3", "cp", f"s3://{BUCKET}/run-1/weights.bin", str(back))
    assert file_sha256(back) == file_sha256(big)

    aws("s3", "rm", "--recursive", f"s3://{BUCKET}/run-1/")
    assert rest.listing(BUCKET, "run-1/") == {}


def test_sync_both_ways(aws: Any, rest: RestDoor, tmp_path: Path) -> None:
    aws("s3", "mb", f"s3://{BUCKET}-sync")
    bucket = f"{BUCKET}-sync"
    source = tmp_path / "dataset"
    files = {f"shard-{i}.npy": os.urandom(1000 * (i + 1)) for i in range(4)}
    files["nested/labels.csv"] = b"id,label\n1,cat\n"
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    aws("s3", "sync", str(source), f"s3://{bucket}/ds/")
    assert rest.listing(bucket, "ds/") == {f"ds/{n}": sha256(d) for n, d in files.items()}

    # Written over REST, pulled by sync: the bytes REST wrote.
    extra = os.urandom(7777)
    rest.put(bucket, "ds/from-rest.bin", extra)
    target = tmp_path / "copy"
    aws("s3", "sync", f"s3://{bucket}/ds/", str(target))
    got = {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert {n: sha256(d) for n, d in got.items()} == {
        **{n: sha256(d) for n, d in files.items()},
        "from-rest.bin": sha256(extra),
    }
    # A second sync has nothing to do: sizes and times of the listing match the files.
    assert aws("s3", "sync", str(source), f"s3://{bucket}/ds/") == ""

    # --delete removes what the source no longer has, seen from REST as well.
    (source / "shard-0.npy").unlink()
    aws("s3", "sync", "--delete", str(source), f"s3://{bucket}/ds/")
    assert set(rest.listing(bucket, "ds/")) == {f"ds/{n}" for n in files if n != "shard-0.npy"}


def test_s3api_commands(aws: Any, rest: RestDoor, tmp_path: Path) -> None:
    bucket = f"{BUCKET}-api"
    aws("s3api", "create-bucket", "--bucket", bucket)
    data = os.urandom(300_000)
    body = tmp_path / "model.pt"
    body.write_bytes(data)
    put = json.loads(
        aws(
            "s3api",
            "put-object",
            "--bucket",
            bucket,
            "--key",
            "m/model.pt",
            "--body",
            str(body),
            "--metadata",
            "epoch=3",
            "--tagging",
            "stage=dev",
        )
    )
    assert rest.sha256(bucket, "m/model.pt") == sha256(data)
    head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", "m/model.pt"))
    assert head["ContentLength"] == len(data) and head["Metadata"] == {"epoch": "3"}
    assert head["ETag"] == put["ETag"]
    part = tmp_path / "part.bin"
    got = json.loads(
        aws(
            "s3api",
            "get-object",
            "--bucket",
            bucket,
            "--key",
            "m/model.pt",
            "--range",
            "bytes=1000-1999",
            str(part),
        )
    )
    assert got["ContentRange"] == f"bytes 1000-1999/{len(data)}"
    assert part.read_bytes() == data[1000:2000]
    tags = json.loads(aws("s3api", "get-object-tagging", "--bucket", bucket, "--key", "m/model.pt"))
    assert tags["TagSet"] == [{"Key": "stage", "Value": "dev"}]
    listed = json.loads(aws("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "m/"))
    assert [o["Key"] for o in listed["Contents"]] == ["m/model.pt"]
    aws("s3api", "delete-object", "--bucket", bucket, "--key", "m/model.pt")
    assert rest.listing(bucket, "m/") == {}


def test_presign_is_sigv4_and_serves_the_bytes(aws: Any, rest: RestDoor) -> None:
    data = os.urandom(4096)
    rest.make_bucket(f"{BUCKET}-presign")
    rest.put(f"{BUCKET}-presign", "p/a.bin", data)
    url = aws("s3", "presign", f"s3://{BUCKET}-presign/p/a.bin", "--expires-in", "300").strip()
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    response = httpx.get(url)
    assert response.status_code == 200 and sha256(response.content) == sha256(data)


def test_a_read_only_key_pair_reads_but_cannot_write(
    server: ServerProcess, rest: RestDoor, client_env: dict[str, str], tmp_path: Path
) -> None:
    bucket = rest.make_bucket(f"{BUCKET}-ro")
    rest.put(bucket, "r/a.bin", b"readable")
    keys = new_keys(rest.client, name="s3-read-only", scopes=["read"])
    credentials = tmp_path / "read-only.s3"
    credentials.write_text(
        f"[default]\naws_access_key_id = {keys['access_key_id']}\n"
        f"aws_secret_access_key = {keys['secret_access_key']}\n"
    )
    env = {**client_env, "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
    (tmp_path / "new.bin").write_bytes(b"not allowed")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AWS, "--endpoint-url", server.s3_url, *args],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    read = run("s3", "cp", f"s3://{bucket}/r/a.bin", "-")
    assert read.returncode == 0 and read.stdout == "readable"
    write = run("s3", "cp", "new.bin", f"s3://{bucket}/r/new.bin")
    assert write.returncode == 1 and "AccessDenied" in write.stderr
    delete = run("s3", "rm", f"s3://{bucket}/r/a.bin")
    assert delete.returncode == 1 and "AccessDenied" in delete.stderr
    assert rest.listing(bucket, "r/") == {"r/a.bin": sha256(b"readable")}
