"""The S3 endpoint of a real `tfstorage serve` process, driven by boto3 and plain httpx.

One server for the module. Every byte boto3 writes is checked by SHA-256 and through
the REST API (same object, same SHA-256, metadata and tags), and the reverse. The auth
cases check the S3 error code in the XML and that nothing was stored.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3api.clients import ChunkEncoder
from tests.server import conftest as server_fixtures
from tests.server.conftest import ADMIN_TOKEN, ServerProcess
from tests.server.helpers import sha256, temp_files
from tests.stored_blobs import stored_blob_ids

pytestmark = pytest.mark.timeout(120)
postgres_database = server_fixtures.postgres_database  # a fresh PostgreSQL database

REGION = "us-east-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("s3-endpoint")
    env = {"S3_PORT": "auto", "S3_DOMAIN": "localhost"}
    proc = ServerProcess(root / "data", env, log_dir=root)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rest(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def s3_client(
    server: ServerProcess, key: str, secret: str, *, checksums: str = "when_supported"
) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=server.s3_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",  # boto3 presigns with SigV2 otherwise
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
            retries={"max_attempts": 1},
        ),
    )


def admin_keys(server: ServerProcess) -> tuple[str, str]:
    parser = configparser.ConfigParser()
    parser.read(server.data_dir / "admin.s3")
    section = parser["default"]
    return section["aws_access_key_id"], section["aws_secret_access_key"]


@pytest.fixture(scope="module")
def s3(server: ServerProcess) -> BaseClient:
    return s3_client(server, *admin_keys(server))


def new_keys(rest: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "s3-test")
    body.setdefault("scopes", ["read", "write", "delete"])
    response = rest.post("/api/v1/tokens", json={**body, "s3": True})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    code: str = exc.value.response["Error"]["Code"]
    return code


def rest_object(rest: httpx.Client, bucket: str, key: str) -> httpx.Response:
    return rest.get(f"/api/v1/download/{bucket}/{key}")


def test_first_start_writes_admin_s3_credentials(server: ServerProcess, s3: BaseClient) -> None:
    path = server.data_dir / "admin.s3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("[default]\naws_access_key_id = TFSK")
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {"models", "datasets", "checkpoints"} <= names


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_put_get_head_match_rest(server: ServerProcess, rest: httpx.Client, checksums: str) -> None:
    s3 = s3_client(server, *admin_keys(server), checksums=checksums)
    data = os.urandom(3 * 1024 * 1024 + 17)
    key = f"boto/{checksums}/model.bin"
    put = s3.put_object(
        Bucket="models", Key=key, Body=data, Metadata={"run": "7"}, Tagging="stage=dev&team=ml"
    )
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="models", Key=key)
    assert sha256(got["Body"].read()) == sha256(data)
    assert got["Metadata"] == {"run": "7"}
    head = s3.head_object(Bucket="models", Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    part = s3.get_object(Bucket="models", Key=key, Range="bytes=100-199")
    assert part["Body"].read() == data[100:200]
    assert part["ContentRange"] == f"bytes 100-199/{len(data)}"
    # The same object over REST: same bytes, metadata and tags.
    response = rest_object(rest, "models", key)
    assert response.status_code == 200
    assert sha256(response.content) == sha256(data)
    assert response.headers["x-checksum-sha256"] == sha256(data)
    info = rest.get(f"/api/v1/files/{response.headers['x-file-id']}").json()
    assert info["metadata"] == {"run": "7"}
    assert info["tags"] == {"stage": "dev", "team": "ml"}
    # One access-log line per S3 request, as for REST: operation, status, token name.
    request_id = put["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    line = next(x for x in server.log_tail(10**7).splitlines() if f"rid={request_id}" in x)
    assert f"PUT /models/{key} 200" in line and "token=admin (ADMIN_TOKEN)" in line
    assert 'route="s3:put_object"' in rest.get("/metrics").text


def test_upload_file_and_download_file(
    server: ServerProcess, s3: BaseClient, rest: httpx.Client, tmp_path: Path
) -> None:
    from boto3.s3.transfer import TransferConfig

    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(24 * 1024 * 1024))
    # One PutObject however large (multipart has its own test).
    single = TransferConfig(multipart_threshold=1 << 40, multipart_chunksize=8 << 20)
    s3.upload_file(str(source), "datasets", "big/shard-0.npy", Config=single)
    target = tmp_path / "back.bin"
    s3.download_file("datasets", "big/shard-0.npy", str(target), Config=single)
    assert sha256(target.read_bytes()) == sha256(source.read_bytes())
    assert sha256(rest_object(rest, "datasets", "big/shard-0.npy").content) == sha256(
        source.read_bytes()
    )


def test_multipart_upload_file_and_parts(
    server: ServerProcess, s3: BaseClient, rest: httpx.Client, tmp_path: Path
) -> None:
    from boto3.s3.transfer import TransferConfig

    source = tmp_path / "ckpt.pt"
    source.write_bytes(os.urandom(40 * 1024 * 1024))
    # 5 parts of 8 MiB, sent by 4 threads at once: boto3's transfer manager as users run it.
    parts = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    s3.upload_file(str(source), "checkpoints", "mpu/ckpt.pt", Config=parts)
    target = tmp_path / "back.pt"
    s3.download_file("checkpoints", "mpu/ckpt.pt", str(target), Config=parts)
    digest = sha256(source.read_bytes())
    assert sha256(target.read_bytes()) == digest
    response = rest_object(rest, "checkpoints", "mpu/ckpt.pt")
    assert response.headers["x-checksum-sha256"] == digest and sha256(response.content) == digest
    # ListParts, ListMultipartUploads and AbortMultipartUpload of a session left open.
    upload = s3.create_multipart_upload(Bucket="checkpoints", Key="mpu/open.pt")["UploadId"]
    etag = s3.upload_part(
        Bucket="checkpoints", Key="mpu/open.pt", UploadId=upload, PartNumber=1, Body=b"x" * 1000
    )["ETag"]
    listed = s3.list_parts(Bucket="checkpoints", Key="mpu/open.pt", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [(1, etag, 1000)]
    uploads = s3.list_multipart_uploads(Bucket="checkpoints")["Uploads"]
    assert [u["UploadId"] for u in uploads] == [upload]
    s3.abort_multipart_upload(Bucket="checkpoints", Key="mpu/open.pt", UploadId=upload)
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket="checkpoints", Key="mpu/open.pt", UploadId=upload)
    assert error_code(exc) == "NoSuchUpload"
    assert rest_object(rest, "checkpoints", "mpu/open.pt").status_code == 404


def test_rest_upload_is_visible_over_s3(rest: httpx.Client, s3: BaseClient) -> None:
    data = os.urandom(100_000)
    response = rest.put(
        "/api/v1/objects/artifacts/from-rest/a.bin",
        content=data,
        headers={"X-Metadata": '{"owner":"ana"}', "X-Tags": "kind=eval"},
    )
    assert response.status_code == 200, response.text
    got = s3.get_object(Bucket="artifacts", Key="from-rest/a.bin")
    assert sha256(got["Body"].read()) == sha256(data)
    assert got["Metadata"] == {"owner": "ana"}
    assert got["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    tags = s3.get_object_tagging(Bucket="artifacts", Key="from-rest/a.bin")["TagSet"]
    assert tags == [{"Key": "kind", "Value": "eval"}]


def test_buckets_and_paginated_listing(s3: BaseClient, rest: httpx.Client) -> None:
    s3.create_bucket(Bucket="s3-listing")
    assert s3.get_bucket_location(Bucket="s3-listing")["LocationConstraint"] is None
    assert s3.head_bucket(Bucket="s3-listing")["ResponseMetadata"]["HTTPStatusCode"] == 200
    keys = sorted(
        [f"dir{d}/file {i:02d}.txt" for d in range(3) for i in range(6)] + ["top+1.txt", "z"]
    )
    for key in keys:
        s3.put_object(Bucket="s3-listing", Key=key, Body=key.encode())
    assert rest.get("/api/v1/list/s3-listing").json()["objects"][0]["key"] == keys[0]
    for method in ("list_objects_v2", "list_objects"):
        pages = s3.get_paginator(method).paginate(
            Bucket="s3-listing", PaginationConfig={"PageSize": 4}
        )
        listed = [o["Key"] for page in pages for o in page.get("Contents", [])]
        assert listed == keys  # byte order, each key once
        grouped = s3.get_paginator(method).paginate(
            Bucket="s3-listing", Delimiter="/", PaginationConfig={"PageSize": 2}
        )
        prefixes: list[str] = []
        top: list[str] = []
        for page in grouped:
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            top += [o["Key"] for o in page.get("Contents", [])]
        assert prefixes == ["dir0/", "dir1/", "dir2/"]
        assert top == ["top+1.txt", "z"]
    # boto3 asks ListObjects v1 for encoding-type=url and decodes keys, never the Prefix.
    spaced = s3.list_objects(Bucket="s3-listing", Prefix="dir1/file 0", MaxKeys=2)
    assert spaced["Prefix"] == "dir1/file 0"
    assert [o["Key"] for o in spaced["Contents"]] == ["dir1/file 00.txt", "dir1/file 01.txt"]
    after = s3.list_objects_v2(Bucket="s3-listing", Prefix="dir1/", StartAfter="dir1/file 03.txt")
    assert [o["Key"] for o in after["Contents"]] == ["dir1/file 04.txt", "dir1/file 05.txt"]
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket="s3-listing")
    assert error_code(exc) == "BucketNotEmpty"
    deleted = s3.delete_objects(
        Bucket="s3-listing",
        Delete={"Objects": [{"Key": k} for k in keys] + [{"Key": "never-there"}]},
    )
    assert len(deleted["Deleted"]) == len(keys) + 1 and "Errors" not in deleted
    assert s3.list_objects_v2(Bucket="s3-listing")["KeyCount"] == 0
    assert rest_object(rest, "s3-listing", keys[0]).status_code == 404
    s3.delete_bucket(Bucket="s3-listing")
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket="s3-listing")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_copy_shares_the_blob(server: ServerProcess, s3: BaseClient, rest: httpx.Client) -> None:
    data = os.urandom(200_000)
    s3.put_object(Bucket="models", Key="copy/src.pt", Body=data, Metadata={"a": "1"})
    blobs_before = len(stored_blob_ids(server.data_dir / "blobs"))
    s3.copy_object(Bucket="models", Key="copy/same.pt", CopySource="models/copy/src.pt")
    s3.copy_object(
        Bucket="checkpoints",
        Key="copy/replaced.pt",
        CopySource={"Bucket": "models", "Key": "copy/src.pt"},
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
    )
    assert len(stored_blob_ids(server.data_dir / "blobs")) == blobs_before  # no bytes moved
    same = s3.get_object(Bucket="models", Key="copy/same.pt")
    assert sha256(same["Body"].read()) == sha256(data) and same["Metadata"] == {"a": "1"}
    replaced = rest_object(rest, "checkpoints", "copy/replaced.pt")
    assert sha256(replaced.content) == sha256(data)
    assert s3.head_object(Bucket="checkpoints", Key="copy/replaced.pt")["Metadata"] == {"b": "2"}
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket="models", Key="copy/src.pt", CopySource="models/copy/src.pt")
    assert error_code(exc) == "InvalidRequest"


def test_tagging_is_the_objects_tags(s3: BaseClient, rest: httpx.Client) -> None:
    s3.put_object(Bucket="models", Key="tags/m.pt", Body=b"weights")
    s3.put_object_tagging(
        Bucket="models",
        Key="tags/m.pt",
        Tagging={"TagSet": [{"Key": "stage", "Value": "prod"}]},
    )
    file_id = rest_object(rest, "models", "tags/m.pt").headers["x-file-id"]
    assert rest.get(f"/api/v1/files/{file_id}").json()["tags"] == {"stage": "prod"}
    got = s3.get_object_tagging(Bucket="models", Key="tags/m.pt")["TagSet"]
    assert got == [{"Key": "stage", "Value": "prod"}]
    s3.delete_object_tagging(Bucket="models", Key="tags/m.pt")
    assert s3.get_object_tagging(Bucket="models", Key="tags/m.pt")["TagSet"] == []


def test_conditional_create_and_get(s3: BaseClient) -> None:
    s3.put_object(Bucket="models", Key="cond/once.bin", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="models", Key="cond/once.bin", Body=b"2", IfNoneMatch="*")
    assert error_code(exc) == "PreconditionFailed"
    etag = s3.head_object(Bucket="models", Key="cond/once.bin")["ETag"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="models", Key="cond/once.bin", IfNoneMatch=etag)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    got = s3.get_object(
        Bucket="models", Key="cond/once.bin", ResponseContentType="text/x-test", IfMatch=etag
    )
    assert got["ContentType"] == "text/x-test" and got["Body"].read() == b"1"


def test_presigned_get_and_put_with_httpx(s3: BaseClient, rest: httpx.Client) -> None:
    data = os.urandom(50_000)
    put_url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "datasets", "Key": "pre/x.npy"}, ExpiresIn=300
    )
    assert httpx.put(put_url, content=data).status_code == 200
    assert sha256(rest_object(rest, "datasets", "pre/x.npy").content) == sha256(data)
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "datasets", "Key": "pre/x.npy"}, ExpiresIn=300
    )
    assert sha256(httpx.get(get_url).content) == sha256(data)
    tampered = get_url.replace("pre/x.npy", "pre/y.npy")
    assert "<Code>SignatureDoesNotMatch</Code>" in httpx.get(tampered).text
    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": "datasets", "Key": "pre/x.npy"}, ExpiresIn=1
    )
    time.sleep(2.1)
    expired = httpx.get(short)
    assert expired.status_code == 403 and "<Code>AccessDenied</Code>" in expired.text


def _refused(client: BaseClient, bucket: str, key: str, code: str) -> None:
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=bucket, Key=key, Body=b"must not be stored")
    assert error_code(exc) == code
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]


def test_auth_failures_store_nothing(server: ServerProcess, rest: httpx.Client) -> None:
    keys = new_keys(rest, buckets=["models"], prefix="team-a/")
    key_id, secret = keys["access_key_id"], keys["secret_access_key"]
    scoped = s3_client(server, key_id, secret)
    scoped.put_object(Bucket="models", Key="team-a/ok.bin", Body=b"ok")
    _refused(
        s3_client(server, key_id, secret + "x"), "models", "team-a/w.bin", "SignatureDoesNotMatch"
    )
    _refused(
        s3_client(server, "TFSKNOSUCHKEY0000000", secret),
        "models",
        "team-a/u.bin",
        "InvalidAccessKeyId",
    )
    _refused(scoped, "models", "team-b/outside.bin", "AccessDenied")
    _refused(scoped, "datasets", "team-a/other-bucket.bin", "AccessDenied")
    revoked = new_keys(rest)
    assert rest.delete(f"/api/v1/tokens/{revoked['id']}").status_code == 200
    gone = s3_client(server, revoked["access_key_id"], revoked["secret_access_key"])
    _refused(gone, "models", "team-a/revoked.bin", "InvalidAccessKeyId")
    # A tampered signature in the header, sent by hand.
    url = f"{server.s3_url}/models/team-a/tampered.bin"
    signed = _signed_headers(key_id, secret, "PUT", url, b"data")
    last = signed["Authorization"][-1]
    signed["Authorization"] = signed["Authorization"][:-1] + ("1" if last == "0" else "0")
    answer = httpx.put(url, content=b"data", headers=signed)
    assert answer.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in answer.text
    # A wrong Content-MD5: BadDigest, nothing stored.
    admin = s3_client(server, *admin_keys(server))
    with pytest.raises(ClientError) as exc:
        admin.put_object(
            Bucket="models",
            Key="team-a/bad-md5.bin",
            Body=b"abc",
            ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==",
        )
    assert error_code(exc) == "BadDigest"
    for key in ("w", "u", "revoked", "tampered", "bad-md5"):
        assert rest_object(rest, "models", f"team-a/{key}.bin").status_code == 404
    assert rest_object(rest, "models", "team-b/outside.bin").status_code == 404
    assert rest_object(rest, "datasets", "team-a/other-bucket.bin").status_code == 404
    # Anonymous: AccessDenied, except reads of a public-read bucket.
    anonymous = httpx.get(f"{server.s3_url}/models/team-a/ok.bin")
    assert anonymous.status_code == 403 and "<Code>AccessDenied</Code>" in anonymous.text
    assert (
        rest.post("/api/v1/buckets", json={"name": "open-data", "public_read": True}).status_code
        == 201
    )
    admin.put_object(Bucket="open-data", Key="readme.txt", Body=b"hello")
    assert httpx.get(f"{server.s3_url}/open-data/readme.txt").content == b"hello"
    assert "<Key>readme.txt</Key>" in httpx.get(f"{server.s3_url}/open-data?list-type=2").text
    put_anon = httpx.put(f"{server.s3_url}/open-data/x.txt", content=b"x")
    assert put_anon.status_code == 403


def _signed_headers(key_id: str, secret: str, method: str, url: str, body: bytes) -> dict[str, str]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(key_id, secret), "s3", REGION).add_auth(request)
    return dict(request.headers.items())


def test_errors_are_s3_xml(server: ServerProcess, s3: BaseClient) -> None:
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="models", Key="no/such/key")
    assert error_code(exc) == "NoSuchKey"
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket="no-such-bucket")
    assert error_code(exc) == "NoSuchBucket"
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_website(Bucket="models")
    assert error_code(exc) == "NotImplemented"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_rest_port_is_not_s3(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base_url}/health").json()["status"] == "healthy"
    assert ADMIN_TOKEN  # the REST door keeps its bearer tokens


class _StreamingSigner:
    """botocore's S3 SigV4 signer, told the payload is signed aws-chunked."""

    @staticmethod
    def sign(
        key_id: str,
        secret: str,
        url: str,
        headers: dict[str, str],
        mode: str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    ) -> dict[str, str]:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        class Streaming(S3SigV4Auth):
            def payload(self, request: Any) -> str:
                return mode

        request = AWSRequest(method="PUT", url=url, headers=headers)
        Streaming(Credentials(key_id, secret), "s3", REGION).add_auth(request)
        return dict(request.headers.items())


def _chunk_encoder(secret: str, signed: dict[str, str]) -> ChunkEncoder:
    import hmac

    amz_date = signed["X-Amz-Date"]
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    seed = signed["Authorization"].rsplit("Signature=", 1)[1]
    return ChunkEncoder(key, amz_date, f"{amz_date[:8]}/{REGION}/s3/aws4_request", seed)


def test_signed_chunks_and_trailers_by_hand(server: ServerProcess, rest: httpx.Client) -> None:
    key_id, secret = admin_keys(server)
    data = [os.urandom(64 * 1024), os.urandom(1000)]
    whole = b"".join(data)
    for name, tamper in (("chunked-ok.bin", False), ("chunked-bad.bin", True)):
        url = f"{server.s3_url}/models/s3chunks/{name}"
        headers = _StreamingSigner.sign(
            key_id,
            secret,
            url,
            {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(whole))},
        )
        body = _chunk_encoder(secret, headers).body(data)
        if tamper:  # one byte of the second chunk's data changed
            at = body.rindex(data[1][:16])
            body = body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]
        answer = httpx.put(url, content=body, headers=headers)
        stored = rest_object(rest, "models", f"s3chunks/{name}")
        if tamper:
            assert answer.status_code == 403, answer.text
            assert "<Code>SignatureDoesNotMatch</Code>" in answer.text
            assert stored.status_code == 404
        else:
            assert answer.status_code == 200, answer.text
            assert sha256(stored.content) == sha256(whole)
    # An unsigned-payload trailer whose CRC32 does not match the body: BadDigest.
    for name, crc in (("trailer-ok.bin", _crc32(whole)), ("trailer-bad.bin", _crc32(b"other"))):
        url = f"{server.s3_url}/models/s3chunks/{name}"
        headers = _StreamingSigner.sign(
            key_id,
            secret,
            url,
            {
                "Content-Encoding": "aws-chunked",
                "x-amz-decoded-content-length": str(len(whole)),
                "x-amz-trailer": "x-amz-checksum-crc32",
            },
            mode="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        )
        body = f"{len(whole):x}\r\n".encode() + whole + b"\r\n0\r\n"
        body += f"x-amz-checksum-crc32:{crc}\r\n\r\n".encode()
        answer = httpx.put(url, content=body, headers=headers)
        stored = rest_object(rest, "models", f"s3chunks/{name}")
        if name == "trailer-bad.bin":
            assert answer.status_code == 400 and "<Code>BadDigest</Code>" in answer.text
            assert stored.status_code == 404
        else:
            assert answer.status_code == 200, answer.text
            assert sha256(stored.content) == sha256(whole)


def _crc32(data: bytes) -> str:
    import base64
    import zlib

    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_two_workers_serve_both_ports(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "data", {"S3_PORT": "auto", "WORKERS": "2"}, log_dir=tmp_path)
    proc.start()
    try:
        s3 = s3_client(proc, *admin_keys(proc))
        for i in range(6):  # several connections: both workers answer some
            s3_client(proc, *admin_keys(proc)).put_object(
                Bucket="models", Key=f"w/{i}.bin", Body=b"%d" % i
            )
        listed = s3.list_objects_v2(Bucket="models", Prefix="w/")["KeyCount"]
        assert listed == 6
        with proc.client() as rest:
            assert rest_object(rest, "models", "w/5.bin").content == b"5"
    finally:
        proc.stop()


def test_bucket_versioning_maps_to_the_buckets_setting(s3: BaseClient, rest: httpx.Client) -> None:
    s3.create_bucket(Bucket="s3-versioning")
    # S3 buckets start unversioned: the bucket's versioning is off until it is enabled.
    assert rest.get("/api/v1/buckets/s3-versioning").json()["versioning"] is False
    s3.put_bucket_versioning(Bucket="s3-versioning", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="s3-versioning")["Status"] == "Enabled"
    assert rest.get("/api/v1/buckets/s3-versioning").json()["versioning"] is True
    s3.put_bucket_versioning(
        Bucket="s3-versioning", VersioningConfiguration={"Status": "Suspended"}
    )
    assert s3.get_bucket_versioning(Bucket="s3-versioning")["Status"] == "Suspended"
    assert rest.get("/api/v1/buckets/s3-versioning").json()["versioning"] is False
    answer = httpx.delete(f"{rest.base_url}/api/v1/buckets/s3-versioning", headers=rest.headers)
    assert answer.status_code in (200, 204)


def test_virtual_host_addressing_under_s3_domain(server: ServerProcess) -> None:
    key_id, secret = admin_keys(server)
    virtual = boto3.client(
        "s3",
        endpoint_url=f"http://localhost:{server.s3_port}",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=REGION,
        config=Config(s3={"addressing_style": "virtual"}, signature_version="s3v4"),
    )
    s3_client(server, key_id, secret).put_object(Bucket="models", Key="vh/a.bin", Body=b"vhost")
    url = virtual.generate_presigned_url(
        "get_object", Params={"Bucket": "models", "Key": "vh/a.bin"}, ExpiresIn=60
    )
    assert url.startswith(f"http://models.localhost:{server.s3_port}/vh/a.bin?")
    # Sent to the loopback address with the Host the URL names (no DNS needed for it).
    loopback = url.replace(f"models.localhost:{server.s3_port}", f"127.0.0.1:{server.s3_port}")
    answer = httpx.get(loopback, headers={"Host": f"models.localhost:{server.s3_port}"})
    assert answer.status_code == 200, answer.text
    assert answer.content == b"vhost"


def test_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    """The key lookup, the write path and listings over the S3 door on the other index."""
    env = {"S3_PORT": "auto", "DATABASE_URL": postgres_database}
    proc = ServerProcess(tmp_path / "data", env, log_dir=tmp_path)
    proc.start()
    try:
        with proc.client() as rest:
            keys = new_keys(rest, buckets=["models"])
            s3 = s3_client(proc, keys["access_key_id"], keys["secret_access_key"])
            data = os.urandom(300_000)
            s3.put_object(Bucket="models", Key="pg/a.bin", Body=data)
            assert sha256(rest_object(rest, "models", "pg/a.bin").content) == sha256(data)
            assert s3.list_objects_v2(Bucket="models", Prefix="pg/")["KeyCount"] == 1
            assert rest.delete(f"/api/v1/tokens/{keys['id']}").status_code == 200
            with pytest.raises(ClientError) as exc:
                s3.get_object(Bucket="models", Key="pg/a.bin")
            assert error_code(exc) == "InvalidAccessKeyId"
    finally:
        proc.stop()


def _half_sent_put(url: str, size: int) -> socket.socket:
    """A PUT to a presigned URL whose body stops halfway, the connection left open."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    sock.sendall(head.encode() + os.urandom(size // 2))
    return sock


def test_sigkill_mid_s3_put_and_mid_part(tmp_path: Path) -> None:
    env = {"S3_PORT": "auto", "ORPHAN_GRACE_SECONDS": "0"}
    proc = ServerProcess(tmp_path / "data", env, log_dir=tmp_path)
    proc.start()
    try:
        s3 = s3_client(proc, *admin_keys(proc))
        kept = {f"crash/{i}.bin": os.urandom(100_000 + i) for i in range(3)}
        for key, data in kept.items():
            s3.put_object(Bucket="models", Key=key, Body=data)
        upload = s3.create_multipart_upload(Bucket="models", Key="crash/mpu.bin")["UploadId"]
        part = os.urandom(5 * 1024 * 1024)
        s3.upload_part(
            Bucket="models", Key="crash/mpu.bin", UploadId=upload, PartNumber=1, Body=part
        )
        presign = s3_client(proc, *admin_keys(proc)).generate_presigned_url
        put_url = presign("put_object", Params={"Bucket": "models", "Key": "crash/half.bin"})
        part_url = presign(
            "upload_part",
            Params={
                "Bucket": "models",
                "Key": "crash/mpu.bin",
                "UploadId": upload,
                "PartNumber": 2,
            },
        )
        # Half of 8 MiB: a few 1 MiB chunks reach the blob store (the last one it has is
        # held back until the next comes, service/hashing.py).
        sockets = [_half_sent_put(put_url, 8 << 20), _half_sent_put(part_url, 8 << 20)]
        deadline = time.monotonic() + 10
        while len(temp_files(proc.data_dir)) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # the half body is being written: now the crash
        assert temp_files(proc.data_dir), "the kill must land mid-body"
        proc.kill()
        for sock in sockets:
            sock.close()
        proc.start()  # same DATA_DIR; start-up GC removes the orphans at once (grace 0)
        s3 = s3_client(proc, *admin_keys(proc))
        with pytest.raises(ClientError) as exc:
            s3.head_object(Bucket="models", Key="crash/half.bin")
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        for key, data in kept.items():
            assert sha256(s3.get_object(Bucket="models", Key=key)["Body"].read()) == sha256(data)
        deadline = time.monotonic() + 10
        while temp_files(proc.data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not temp_files(proc.data_dir)  # the half-written body is collected
        # The upload survives with its acknowledged part and completes with it alone.
        listed = s3.list_parts(Bucket="models", Key="crash/mpu.bin", UploadId=upload)["Parts"]
        assert [p["PartNumber"] for p in listed] == [1]
        s3.complete_multipart_upload(
            Bucket="models",
            Key="crash/mpu.bin",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": listed[0]["ETag"]}]},
        )
        got = s3.get_object(Bucket="models", Key="crash/mpu.bin")["Body"].read()
        assert sha256(got) == sha256(part)
    finally:
        proc.stop()


def test_absurd_numbers_are_client_errors(server: ServerProcess, rest: httpx.Client) -> None:
    created = rest.post("/api/v1/buckets", json={"name": "open-numbers", "public_read": True})
    assert created.status_code == 201
    url = f"{server.s3_url}/open-numbers"
    huge = "9" * 5000  # past Python's int() digit limit: must not become a 500
    listed = httpx.get(url, params={"list-type": "2", "max-keys": huge})
    assert listed.status_code == 200 and "<MaxKeys>1000</MaxKeys>" in listed.text
    bad = httpx.get(url, params={"list-type": "2", "max-keys": "-1"})
    assert bad.status_code == 400 and "<Code>InvalidArgument</Code>" in bad.text


def test_a_trickled_s3_body_gets_408_in_xml_and_stores_nothing(tmp_path: Path) -> None:
    # Never idle (a few bytes every 0.1 s), but far below BODY_MIN_RATE: 100 KB are due
    # within max(grace 1 s, 100 KB / 50 KB/s) = 2 s of waiting.
    env = {"S3_PORT": "auto", "BODY_MIN_RATE": "50KB", "BODY_GRACE_SECONDS": "1"}
    proc = ServerProcess(tmp_path / "data", env, log_dir=tmp_path)
    proc.start()
    try:
        s3 = s3_client(proc, *admin_keys(proc))
        url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": "models", "Key": "slow/trickled.bin"}
        )
        parts = urlsplit(url)
        started = time.monotonic()
        answer = b""
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            head = (
                f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Content-Length: 100000\r\n\r\n"
            )
            sock.sendall(head.encode())
            sock.setblocking(False)
            while time.monotonic() - started < 15 and b"</Error>" not in answer:
                with contextlib.suppress(BlockingIOError):
                    sock.sendall(b"z" * 100)
                time.sleep(0.1)
                with contextlib.suppress(BlockingIOError):
                    answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"<Code>RequestTimeout</Code>" in answer
        assert b"connection: close" in answer.lower()
        with pytest.raises(ClientError) as exc:
            s3.head_object(Bucket="models", Key="slow/trickled.bin")
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    finally:
        proc.stop()


def test_delete_objects_authorises_before_the_bucket_and_the_body(
    server: ServerProcess, rest: httpx.Client, s3: BaseClient
) -> None:
    """Anonymous callers and keys without `delete` get AccessDenied whether or not the
    bucket exists and whatever the body: no bucket enumeration, no parsing for them."""
    assert rest.post(
        "/api/v1/buckets", json={"name": "open-deletes", "public_read": True}
    ).is_success
    s3.put_object(Bucket="open-deletes", Key="keep.txt", Body=b"keep")
    s3.put_object(Bucket="models", Key="team-d/in.bin", Body=b"in")
    s3.put_object(Bucket="models", Key="team-e/out.bin", Body=b"out")
    body = b"<Delete><Object><Key>keep.txt</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    for bucket in ("no-such-bucket", "models", "open-deletes"):
        for content in (body, b"not xml at all"):
            answer = httpx.post(
                f"{server.s3_url}/{bucket}?delete", content=content, headers={"Content-MD5": md5}
            )
            assert answer.status_code == 403, (bucket, answer.text)
            assert "<Code>AccessDenied</Code>" in answer.text
    assert s3.get_object(Bucket="open-deletes", Key="keep.txt")["Body"].read() == b"keep"
    reader = new_keys(rest, scopes=["read", "write"])
    read_only = s3_client(server, reader["access_key_id"], reader["secret_access_key"])
    for bucket in ("no-such-bucket", "models"):
        with pytest.raises(ClientError) as exc:
            read_only.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "team-d/in.bin"}]})
        assert error_code(exc) == "AccessDenied"
    # A prefix-scoped key deletes inside its prefix; each key outside it is refused alone.
    scoped_keys = new_keys(rest, buckets=["models"], prefix="team-d/")
    scoped = s3_client(server, scoped_keys["access_key_id"], scoped_keys["secret_access_key"])
    result = scoped.delete_objects(
        Bucket="models",
        Delete={"Objects": [{"Key": "team-d/in.bin"}, {"Key": "team-e/out.bin"}]},
    )
    assert [d["Key"] for d in result["Deleted"]] == ["team-d/in.bin"]
    assert [(e["Key"], e["Code"]) for e in result["Errors"]] == [("team-e/out.bin", "AccessDenied")]
    assert rest_object(rest, "models", "team-d/in.bin").status_code == 404
    assert rest_object(rest, "models", "team-e/out.bin").content == b"out"


def test_audit_names_the_client_a_trusted_proxy_forwards(
    server: ServerProcess, rest: httpx.Client
) -> None:
    """The server's peer (127.0.0.1) is a trusted proxy by default (FORWARDED_ALLOW_IPS)."""
    url = f"{server.s3_url}/models/forwarded/by-proxy.bin"
    headers = _signed_headers(*admin_keys(server), "PUT", url, b"proxied")
    answer = httpx.put(
        url, content=b"proxied", headers={**headers, "X-Forwarded-For": "203.0.113.7"}
    )
    assert answer.status_code == 200, answer.text
    entries = rest.get("/api/v1/audit", params={"bucket": "models"}).json()["entries"]
    [entry] = [e for e in entries if e.get("key") == "forwarded/by-proxy.bin"]
    assert entry["client"] == "203.0.113.7"


def test_s3_secrets_need_the_server_key_not_just_the_index(tmp_path: Path) -> None:
    """Another key (S3_SECRET_KEY, or a new key file) refuses every key pair issued under
    the old one; the same key file accepts them again. Deleting the file and restarting
    is the README's rotation procedure."""
    proc = ServerProcess(tmp_path / "data", {"S3_PORT": "auto"}, log_dir=tmp_path)
    key_file = proc.data_dir / "s3-secret.key"
    proc.start()
    try:
        keys = admin_keys(proc)
        s3_client(proc, *keys).put_object(Bucket="models", Key="k.bin", Body=b"kept")
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        original = key_file.read_bytes()
        proc.stop()
        proc.extra_env["S3_SECRET_KEY"] = "another-key-set-on-every-instance-0123456789"
        proc.start()
        with pytest.raises(ClientError) as exc:
            s3_client(proc, *keys).get_object(Bucket="models", Key="k.bin")
        assert error_code(exc) in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
        proc.stop()
        del proc.extra_env["S3_SECRET_KEY"]
        proc.start()  # the same key file: the same secrets
        assert (
            s3_client(proc, *keys).get_object(Bucket="models", Key="k.bin")["Body"].read()
            == b"kept"
        )
        proc.stop()
        key_file.unlink()  # rotation: a new key is generated on start
        proc.start()
        assert key_file.read_bytes() != original
        with pytest.raises(ClientError) as exc:
            s3_client(proc, *keys).put_object(Bucket="models", Key="k2.bin", Body=b"no")
        assert error_code(exc) in ("InvalidAccessKeyId", "SignatureDoesNotMatch")
        with proc.client() as rest:
            assert rest_object(rest, "models", "k2.bin").status_code == 404
        # admin.s3 held a dead secret: the start wrote the admin token a new, working pair.
        renewed = admin_keys(proc)
        assert renewed[0] != keys[0]
        s3_client(proc, *renewed).put_object(Bucket="models", Key="k3.bin", Body=b"new key")
    finally:
        proc.stop()
