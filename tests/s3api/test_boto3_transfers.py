"""boto3 at its current version, as users run it, against a real server process.

Two ways boto3 talks to S3 today: its default (`when_supported`), which over HTTPS sends
every upload as aws-chunked with a CRC trailer, and `when_required`, which sends plain
bodies. The default is driven through a TLS terminator (botocore uses trailers only over
TLS), `when_required` over plain HTTP. Each mode moves 100 MiB with the transfer manager
(multipart up, ranged parts down) and runs the everyday calls; every byte is checked by
SHA-256 on the S3 side and through the REST API, and the reverse.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3api.tls_terminator import tls_terminator
from tests.server.conftest import ServerProcess
from tests.server.helpers import sha256

pytestmark = pytest.mark.timeout(300)

MODES = ["when_supported", "when_required"]
MiB = 1024 * 1024
_BUNDLES: dict[int, str] = {}  # client -> the CA bundle it verifies the TLS terminator with


@pytest.fixture(scope="module")
def rest(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def https(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    with tls_terminator(server.s3_port, tmp_path_factory.mktemp("tls")) as endpoint:
        yield endpoint


class Recorder:
    """The headers of every request boto3 puts on the wire, by operation."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: Any, **kwargs: Any) -> None:
        operation = kwargs.get("event_name", "").rsplit(".", 1)[-1]
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        self.sent.append((operation, headers))

    def headers_of(self, operation: str) -> list[dict[str, str]]:
        return [h for op, h in self.sent if op == operation]


def _keys(server: ServerProcess) -> tuple[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(server.data_dir / "admin.s3")
    return parser["default"]["aws_access_key_id"], parser["default"]["aws_secret_access_key"]


@pytest.fixture(scope="module", params=MODES)
def client(
    request: pytest.FixtureRequest, server: ServerProcess, https: tuple[str, str]
) -> tuple[BaseClient, Recorder, str]:
    mode: str = request.param
    url, bundle = https if mode == "when_supported" else (server.s3_url, None)
    key_id, secret = _keys(server)
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=bundle,
        # Everything else is boto3's own default, except presigning: boto3 presigns with
        # SigV2 unless told s3v4, and SigV2 is refused (issue 12: "No SigV2").
        config=Config(
            request_checksum_calculation=mode,
            response_checksum_validation=mode,
            signature_version="s3v4",
        ),
    )
    if bundle:
        _BUNDLES[id(s3)] = bundle
    recorder = Recorder()
    s3.meta.events.register("before-send.s3", recorder)
    return s3, recorder, mode


def test_100_mib_upload_file_and_download_file(
    client: tuple[BaseClient, Recorder, str], rest: httpx.Client, tmp_path: Path
) -> None:
    s3, recorder, mode = client
    source = tmp_path / "shard.npy"
    source.write_bytes(os.urandom(100 * MiB))
    digest = sha256(source.read_bytes())
    key = f"transfers/{mode}/shard.npy"
    s3.upload_file(str(source), "datasets", key)  # boto3's defaults: 8 MiB parts, 10 threads
    uploads = recorder.headers_of("UploadPart")
    assert len(uploads) == 13
    if mode == "when_supported":  # aws-chunked bodies with a CRC trailer, as AWS gets them
        assert all(h.get("x-amz-trailer", "").startswith("x-amz-checksum-") for h in uploads)
        assert all(
            h["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER" for h in uploads
        )
    else:
        assert not any("x-amz-trailer" in h for h in uploads)
    target = tmp_path / "back.npy"
    s3.download_file("datasets", key, str(target))  # ranged GETs of 8 MiB, in parallel
    assert sha256(target.read_bytes()) == digest
    through_rest = rest.get(f"/api/v1/download/datasets/{key}")
    assert through_rest.status_code == 200
    assert through_rest.headers["x-checksum-sha256"] == digest
    assert sha256(through_rest.content) == digest
    # The reverse: 20 MiB uploaded over REST, read with the transfer manager.
    data = os.urandom(20 * MiB)
    put = rest.put(f"/api/v1/objects/datasets/transfers/{mode}/from-rest.npy", content=data)
    assert put.status_code == 200, put.text
    back = tmp_path / "from-rest.npy"
    s3.download_file("datasets", f"transfers/{mode}/from-rest.npy", str(back))
    assert sha256(back.read_bytes()) == sha256(data)


def test_everyday_calls(client: tuple[BaseClient, Recorder, str], rest: httpx.Client) -> None:
    s3, recorder, mode = client
    bucket = f"everyday-{mode.replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    bodies = {f"runs/{i:03d}/metrics.json": os.urandom(1000 + i) for i in range(25)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Tagging="kind=metrics")
    if mode == "when_supported":
        puts = recorder.headers_of("PutObject")
        assert all(h["x-amz-trailer"] == "x-amz-checksum-crc32" for h in puts)
    # Paginated listing, 7 keys a page, in byte order, each key once.
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="runs/", PaginationConfig={"PageSize": 7}
    )
    listed = [o["Key"] for page in pages for o in page["Contents"]]
    assert listed == sorted(bodies)
    # Copy: same bytes under another key, seen over REST.
    s3.copy_object(
        Bucket=bucket, Key="best/metrics.json", CopySource=f"{bucket}/runs/007/metrics.json"
    )
    copied = rest.get(f"/api/v1/download/{bucket}/best/metrics.json")
    assert sha256(copied.content) == sha256(bodies["runs/007/metrics.json"])
    # Tagging is the object's tags.
    assert s3.get_object_tagging(Bucket=bucket, Key="runs/003/metrics.json")["TagSet"] == [
        {"Key": "kind", "Value": "metrics"}
    ]
    s3.put_object_tagging(
        Bucket=bucket,
        Key="runs/003/metrics.json",
        Tagging={"TagSet": [{"Key": "kind", "Value": "best"}]},
    )
    file_id = rest.get(f"/api/v1/download/{bucket}/runs/003/metrics.json").headers["x-file-id"]
    assert rest.get(f"/api/v1/files/{file_id}").json()["tags"] == {"kind": "best"}
    # Presigned GET and PUT used by plain httpx.
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "presigned/in.bin"}, ExpiresIn=300
    )
    data = os.urandom(70_000)
    assert _http(s3).put(put_url, content=data).status_code == 200
    assert sha256(rest.get(f"/api/v1/download/{bucket}/presigned/in.bin").content) == sha256(data)
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "runs/010/metrics.json"}, ExpiresIn=300
    )
    assert _http(s3).get(get_url).content == bodies["runs/010/metrics.json"]
    # delete_objects of everything, then the bucket.
    everything = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page["Contents"]
    ]
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in everything]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == sorted(everything)
    assert rest.get(f"/api/v1/download/{bucket}/runs/000/metrics.json").status_code == 404
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket=bucket)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def _http(s3: BaseClient) -> httpx.Client:
    """Plain httpx that trusts what the boto3 client was told to trust (the test CA)."""
    bundle = _BUNDLES.get(id(s3))
    return httpx.Client(verify=ssl.create_default_context(cafile=bundle), timeout=60)


def test_md5_of_what_boto3_sent_is_the_etag(client: tuple[BaseClient, Recorder, str]) -> None:
    s3, _, _ = client
    data = os.urandom(123_456)
    etag = s3.put_object(Bucket="models", Key="etag/check.bin", Body=data)["ETag"]
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
