"""The `minio` Python SDK against the S3 endpoint, checked by SHA-256 through REST."""

from __future__ import annotations

import io
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from minio import Minio
from minio.commonconfig import Tags
from minio.error import S3Error

from tests.s3clients.conftest import REGION, RestDoor, file_sha256, sha256
from tests.server.conftest import ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

BUCKET = "minio-sdk-test"


@pytest.fixture(scope="module")
def mc(server: ServerProcess, s3_keys: tuple[str, str]) -> Minio:
    key, secret = s3_keys
    client = Minio(
        urlsplit(server.s3_url).netloc,
        access_key=key,
        secret_key=secret,
        secure=False,
        region=REGION,
    )
    if not client.bucket_exists(BUCKET):
        client.make_bucket(BUCKET)
    return client


def test_put_stat_get_and_range(mc: Minio, rest: RestDoor) -> None:
    data = os.urandom(2 * 1024 * 1024 + 11)
    tags = Tags.new_object_tags()
    tags["stage"] = "prod"
    mc.put_object(
        BUCKET,
        "m/model.bin",
        io.BytesIO(data),
        len(data),
        metadata={"x-amz-meta-epoch": "9"},
        tags=tags,
    )
    assert rest.sha256(BUCKET, "m/model.bin") == sha256(data)
    info = mc.stat_object(BUCKET, "m/model.bin")
    assert info.size == len(data) and info.metadata is not None
    assert info.metadata["x-amz-meta-epoch"] == "9"
    got_tags = mc.get_object_tags(BUCKET, "m/model.bin")
    assert got_tags is not None and dict(got_tags) == {"stage": "prod"}

    response = mc.get_object(BUCKET, "m/model.bin")
    try:
        assert sha256(response.read()) == sha256(data)
    finally:
        response.close()
        response.release_conn()
    part = mc.get_object(BUCKET, "m/model.bin", offset=1_000_000, length=4096)
    try:
        assert part.read() == data[1_000_000:1_004_096]
    finally:
        part.close()
        part.release_conn()


def test_fput_fget_list_remove(mc: Minio, rest: RestDoor, tmp_path: Path) -> None:
    # 12 MiB in 5 MiB parts: the SDK's multipart upload of 3 parts.
    source = tmp_path / "shard.npy"
    source.write_bytes(os.urandom(12 * 1024 * 1024))
    mc.fput_object(BUCKET, "ds/shard.npy", str(source), part_size=5 * 1024 * 1024)
    assert rest.sha256(BUCKET, "ds/shard.npy") == file_sha256(source)

    rest.put(BUCKET, "ds/from-rest.csv", b"a,b\n1,2\n")
    target = tmp_path / "from-rest.csv"
    mc.fget_object(BUCKET, "ds/from-rest.csv", str(target))
    assert target.read_bytes() == b"a,b\n1,2\n"

    names = sorted(
        o.object_name or "" for o in mc.list_objects(BUCKET, prefix="ds/", recursive=True)
    )
    assert names == ["ds/from-rest.csv", "ds/shard.npy"]
    mc.remove_object(BUCKET, "ds/shard.npy")
    assert set(rest.listing(BUCKET, "ds/")) == {"ds/from-rest.csv"}
    with pytest.raises(S3Error) as exc:
        mc.stat_object(BUCKET, "ds/shard.npy")
    assert exc.value.code == "NoSuchKey"


def test_presigned_get(mc: Minio, rest: RestDoor) -> None:
    data = os.urandom(1000)
    rest.put(BUCKET, "p/x.bin", data)
    response = httpx.get(mc.presigned_get_object(BUCKET, "p/x.bin"))
    assert response.status_code == 200 and sha256(response.content) == sha256(data)
