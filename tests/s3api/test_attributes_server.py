"""Stored content headers and GetObjectAttributes on a real `tfstorage serve`, with boto3.

Content headers (Cache-Control, Content-Disposition, Content-Encoding, Content-Language,
Expires) are kept by PutObject, CreateMultipartUpload, CopyObject and the REST upload,
and given back by GET and HEAD on both front doors. GetObjectAttributes answers from the
index: ETag, the SHA-256 checksum, the parts (paged), the storage class and the size.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import admin_keys, error_code, new_keys, s3_client
from tests.server import conftest as server_fixtures
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)
postgres_database = server_fixtures.postgres_database  # a fresh PostgreSQL database

MIB = 1024 * 1024
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]
HEADERS = {
    "CacheControl": "public, max-age=86400",
    "ContentDisposition": 'attachment; filename="train.parquet"',
    "ContentEncoding": "gzip",
    "ContentLanguage": "en-GB",
    "Expires": "Wed, 21 Oct 2037 07:28:00 GMT",
}


@pytest.fixture(scope="module")
def plain_bucket(s3: BaseClient) -> str:
    """Created over S3, hence unversioned, as S3 starts a bucket; any file type."""
    s3.create_bucket(Bucket="attrs-plain")
    return "attrs-plain"


@pytest.fixture(scope="module")
def web(s3: BaseClient) -> str:
    s3.create_bucket(Bucket="attrs-web")
    return "attrs-web"


@pytest.fixture(scope="module")
def versioned(s3: BaseClient) -> str:
    s3.create_bucket(Bucket="attrs-versioned")
    s3.put_bucket_versioning(
        Bucket="attrs-versioned", VersioningConfiguration={"Status": "Enabled"}
    )
    return "attrs-versioned"


def content_headers(answer: dict[str, Any]) -> dict[str, Any]:
    return {name: answer.get(name) for name in HEADERS if name != "Expires"} | {
        "Expires": answer.get("ExpiresString")
    }


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# Stored content headers ----------------------------------------------------------------


def test_put_object_keeps_them_for_get_and_head(s3: BaseClient, web: str) -> None:
    s3.put_object(Bucket=web, Key="web/a.parquet", Body=b"rows", **HEADERS)
    for answer in (
        s3.get_object(Bucket=web, Key="web/a.parquet"),
        s3.head_object(Bucket=web, Key="web/a.parquet"),
    ):
        assert content_headers(answer) == HEADERS
    # A response-* override still wins over what is stored.
    got = s3.get_object(Bucket=web, Key="web/a.parquet", ResponseCacheControl="no-cache")
    assert got["CacheControl"] == "no-cache"
    assert got["ContentLanguage"] == "en-GB"


def test_none_given_none_sent(s3: BaseClient, web: str) -> None:
    s3.put_object(Bucket=web, Key="web/bare.bin", Body=b"x")
    head = s3.head_object(Bucket=web, Key="web/bare.bin")
    assert "CacheControl" not in head and "ContentEncoding" not in head
    assert "ExpiresString" not in head and "ContentLanguage" not in head


def test_aws_chunked_is_transport_not_stored(s3: BaseClient, web: str) -> None:
    # What ceph's test_object_content_encoding_aws_chunked sends.
    s3.put_object(Bucket=web, Key="web/c.bin", Body=b"abc", ContentEncoding="aws-chunked")
    assert "ContentEncoding" not in s3.head_object(Bucket=web, Key="web/c.bin")
    s3.put_object(Bucket=web, Key="web/d.bin", Body=b"abc", ContentEncoding="aws-chunked,gzip")
    assert s3.head_object(Bucket=web, Key="web/d.bin")["ContentEncoding"] == "gzip"


def test_copy_keeps_them_and_replace_drops_them(s3: BaseClient, web: str) -> None:
    s3.put_object(Bucket=web, Key="cp/src", Body=b"s", **HEADERS)
    source = {"Bucket": web, "Key": "cp/src"}
    s3.copy_object(Bucket=web, Key="cp/kept", CopySource=source)
    assert content_headers(s3.head_object(Bucket=web, Key="cp/kept")) == HEADERS
    s3.copy_object(
        Bucket=web,
        Key="cp/replaced",
        CopySource=source,
        MetadataDirective="REPLACE",
        ContentLanguage="fr",
    )
    head = s3.head_object(Bucket=web, Key="cp/replaced")
    assert head["ContentLanguage"] == "fr"
    assert "CacheControl" not in head and "ContentDisposition" not in head


def test_multipart_upload_keeps_them(s3: BaseClient, web: str) -> None:
    key = "mp/headers.bin"
    upload = s3.create_multipart_upload(
        Bucket=web, Key=key, CacheControl="max-age=60", ContentDisposition="inline"
    )["UploadId"]
    etag = s3.upload_part(Bucket=web, Key=key, UploadId=upload, PartNumber=1, Body=b"only part")[
        "ETag"
    ]
    s3.complete_multipart_upload(
        Bucket=web,
        Key=key,
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
    )
    head = s3.head_object(Bucket=web, Key=key)
    assert (head["CacheControl"], head["ContentDisposition"]) == ("max-age=60", "inline")


def test_rest_upload_and_download(s3: BaseClient, rest: httpx.Client, web: str) -> None:
    put = rest.put(
        "/api/v1/objects/attrs-web/rest/page.html",
        content=b"<p>hi</p>",
        headers={
            "Cache-Control": "max-age=300",
            "Content-Language": "nl",
            "Content-Disposition": "inline",
        },
    )
    assert put.status_code == 200, put.text
    head = s3.head_object(Bucket=web, Key="rest/page.html")
    assert (head["CacheControl"], head["ContentLanguage"]) == ("max-age=300", "nl")
    assert head["ContentDisposition"] == "inline"
    down = rest.get("/api/v1/download/attrs-web/rest/page.html")
    assert down.headers["cache-control"] == "max-age=300"
    assert down.headers["content-language"] == "nl"
    # A REST download stays an attachment whatever the uploader stored.
    assert down.headers["content-disposition"] == 'attachment; filename="page.html"'
    # An S3 upload's headers come back on a REST download too.
    # (HEAD: httpx would try to gunzip bytes that only claim to be gzip.)
    s3_put = rest.head("/api/v1/download/attrs-web/web/a.parquet")
    assert s3_put.headers["expires"] == HEADERS["Expires"]
    assert s3_put.headers["content-encoding"] == "gzip"


def test_a_header_too_long_to_keep_is_refused_on_both_doors(
    s3: BaseClient, rest: httpx.Client, web: str
) -> None:
    too_long = "max-age=" + "9" * 1100
    put = rest.put(
        "/api/v1/objects/attrs-web/refused/rest.html",
        content=b"x",
        headers={"Cache-Control": too_long},
    )
    assert put.status_code == 400 and put.json()["code"] == "InvalidArgument", put.text
    assert "Cache-Control" in put.json()["error"]
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=web, Key="refused/s3.html", Body=b"x", CacheControl=too_long)
    assert error_code(exc) == "InvalidArgument"
    for key in ("refused/rest.html", "refused/s3.html"):
        assert rest.get(f"/api/v1/download/attrs-web/{key}").status_code == 404


# GetObjectAttributes -------------------------------------------------------------------


def test_attributes_of_an_object_written_whole(s3: BaseClient, plain_bucket: str) -> None:
    data = os.urandom(1000)
    put = s3.put_object(Bucket=plain_bucket, Key="whole.bin", Body=data)
    got = s3.get_object_attributes(Bucket=plain_bucket, Key="whole.bin", ObjectAttributes=ALL)
    assert got["ETag"] == put["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    assert got["ObjectSize"] == 1000
    assert got["StorageClass"] == "STANDARD"
    assert got["Checksum"]["ChecksumSHA256"] == sha256_b64(data)
    assert "ObjectParts" not in got
    assert "VersionId" not in got  # unversioned bucket: S3 names no version
    assert "LastModified" in got
    only = s3.get_object_attributes(
        Bucket=plain_bucket, Key="whole.bin", ObjectAttributes=["ObjectSize"]
    )
    assert only["ObjectSize"] == 1000 and "ETag" not in only and "Checksum" not in only


def test_put_tells_back_the_sha256_it_was_sent(s3: BaseClient, plain_bucket: str) -> None:
    data = b"A" * 1024
    put = s3.put_object(
        Bucket=plain_bucket,
        Key="sum.bin",
        Body=data,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=sha256_b64(data),
    )
    assert put["ChecksumSHA256"] == sha256_b64(data)


def test_attributes_of_a_multipart_object_paged(s3: BaseClient, web: str) -> None:
    key = "mp/three.bin"
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=web, Key=key)["UploadId"]
    done = []
    for number, body in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=web, Key=key, UploadId=upload, PartNumber=number, Body=body)[
            "ETag"
        ]
        done.append({"PartNumber": number, "ETag": etag})
    completed = s3.complete_multipart_upload(
        Bucket=web, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
    )
    got = s3.get_object_attributes(Bucket=web, Key=key, ObjectAttributes=ALL)
    assert got["ETag"] == completed["ETag"].strip('"')
    assert got["ObjectSize"] == sum(len(p) for p in parts)
    assert got["Checksum"]["ChecksumSHA256"] == sha256_b64(b"".join(parts))
    listed = got["ObjectParts"]
    assert listed["TotalPartsCount"] == 3 and listed["IsTruncated"] is False
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [
        (1, 5 * MIB),
        (2, 5 * MIB),
        (3, 4),
    ]
    page = s3.get_object_attributes(
        Bucket=web, Key=key, ObjectAttributes=ALL, MaxParts=1, PartNumberMarker=1
    )["ObjectParts"]
    assert [p["PartNumber"] for p in page["Parts"]] == [2]
    assert page["IsTruncated"] is True and page["NextPartNumberMarker"] == 2
    assert (page["MaxParts"], page["PartNumberMarker"]) == (1, 1)
    last = s3.get_object_attributes(
        Bucket=web, Key=key, ObjectAttributes=["ObjectParts"], PartNumberMarker=2
    )["ObjectParts"]
    assert [p["PartNumber"] for p in last["Parts"]] == [3] and last["IsTruncated"] is False


def test_attributes_of_a_version(s3: BaseClient, versioned: str) -> None:
    first = s3.put_object(Bucket=versioned, Key="v/obj", Body=b"foo")
    s3.put_object(Bucket=versioned, Key="v/obj", Body=b"foobar")
    latest = s3.get_object_attributes(Bucket=versioned, Key="v/obj", ObjectAttributes=ALL)
    assert latest["ObjectSize"] == 6 and latest["VersionId"] != first["VersionId"]
    old = s3.get_object_attributes(
        Bucket=versioned, Key="v/obj", VersionId=first["VersionId"], ObjectAttributes=ALL
    )
    assert (old["VersionId"], old["ObjectSize"]) == (first["VersionId"], 3)
    assert old["ETag"] == first["ETag"].strip('"')


def test_attributes_refusals(
    s3: BaseClient, server: ServerProcess, rest: httpx.Client, web: str
) -> None:
    with pytest.raises(ClientError) as missing:
        s3.get_object_attributes(Bucket=web, Key="nope", ObjectAttributes=ALL)
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.put_object(Bucket=web, Key="refuse.bin", Body=b"x")
    with pytest.raises(ClientError) as unknown:
        s3.get_object_attributes(Bucket=web, Key="refuse.bin", ObjectAttributes=["Owner"])
    assert error_code(unknown) == "InvalidArgument"
    # A token without read on the bucket learns nothing.
    keys = new_keys(rest, buckets=["models"])
    other = s3_client(server, keys["access_key_id"], keys["secret_access_key"])
    with pytest.raises(ClientError) as denied:
        other.get_object_attributes(Bucket=web, Key="refuse.bin", ObjectAttributes=ALL)
    assert error_code(denied) == "AccessDenied"


def test_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    env = {"S3_PORT": "auto", "DATABASE_URL": postgres_database}
    proc = ServerProcess(tmp_path / "data", env, log_dir=tmp_path)
    proc.start()
    try:
        s3 = s3_client(proc, *admin_keys(proc))
        s3.create_bucket(Bucket="pg-web")
        s3.put_object(Bucket="pg-web", Key="pg/a", Body=b"pg", **HEADERS)
        assert content_headers(s3.head_object(Bucket="pg-web", Key="pg/a")) == HEADERS
        s3.copy_object(Bucket="pg-web", Key="pg/b", CopySource="pg-web/pg/a")
        assert content_headers(s3.get_object(Bucket="pg-web", Key="pg/b")) == HEADERS
        got = s3.get_object_attributes(Bucket="pg-web", Key="pg/b", ObjectAttributes=ALL)
        assert (got["ObjectSize"], got["Checksum"]["ChecksumSHA256"]) == (2, sha256_b64(b"pg"))
    finally:
        proc.stop()
