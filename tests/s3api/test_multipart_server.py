"""Multipart uploads over the S3 endpoint of a real `tfstorage serve` process, by boto3.

S3's multipart ETag on every answer that names the object (while the REST API keeps the
whole object's MD5 and SHA-256), retried completions, UploadPartCopy, reads of one part,
paged ListParts and ListMultipartUploads, the completion errors, and a completion that
answers 200 before it has finished (an error found late then travels inside the 200).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import admin_keys, error_code, new_keys, s3_client
from tests.server import conftest as server_fixtures
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)
postgres_database = server_fixtures.postgres_database  # a fresh PostgreSQL database

MIB = 1024 * 1024


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def s3_etag(*parts: bytes) -> str:
    """S3's multipart ETag, as a client computes it from the parts it sent."""
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def upload_parts(s3: BaseClient, bucket: str, key: str, *parts: bytes) -> tuple[str, list[Any]]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    sent = []
    for number, body in enumerate(parts, start=1):
        etag = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
        )["ETag"]
        sent.append({"PartNumber": number, "ETag": etag})
    return upload, sent


def complete(s3: BaseClient, bucket: str, key: str, upload: str, parts: list[Any]) -> Any:
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
    )


def test_multipart_etag_on_every_s3_answer_md5_and_sha256_on_rest(
    s3: BaseClient, rest: httpx.Client
) -> None:
    first, last = os.urandom(5 * MIB), os.urandom(1000)
    upload, parts = upload_parts(s3, "models", "etag/model.bin", first, last)
    done = complete(s3, "models", "etag/model.bin", upload, parts)
    expected = s3_etag(first, last)
    assert done["ETag"] == expected
    head = s3.head_object(Bucket="models", Key="etag/model.bin")
    assert head["ETag"] == expected and head["VersionId"] == done["VersionId"]
    got = s3.get_object(Bucket="models", Key="etag/model.bin")
    assert got["ETag"] == expected and got["Body"].read() == first + last
    listed = s3.list_objects_v2(Bucket="models", Prefix="etag/")["Contents"]
    assert [o["ETag"] for o in listed] == [expected]
    assert s3.list_objects(Bucket="models", Prefix="etag/")["Contents"][0]["ETag"] == expected
    # The REST API answers the whole object's MD5 and SHA-256, as for any object.
    whole = first + last
    response = rest.get("/api/v1/download/models/etag/model.bin")
    assert response.headers["etag"] == f'"{md5(whole)}"'
    assert response.headers["x-checksum-sha256"] == hashlib.sha256(whole).hexdigest()
    # Either ETag names the version on either door.
    for etag in (expected, f'"{md5(whole)}"'):
        assert s3.head_object(Bucket="models", Key="etag/model.bin", IfMatch=etag)["ETag"]
        with pytest.raises(ClientError) as exc:
            s3.head_object(Bucket="models", Key="etag/model.bin", IfNoneMatch=etag)
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
        path = "/api/v1/download/models/etag/model.bin"
        assert rest.get(path, headers={"If-Match": etag}).status_code == 200
        assert rest.get(path, headers={"If-None-Match": etag}).status_code == 304
    # A conditional overwrite judged on the multipart ETag, and on a stale one.
    s3.put_object(Bucket="models", Key="etag/model.bin", Body=b"v2", IfMatch=expected)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="models", Key="etag/model.bin", Body=b"v3", IfMatch=expected)
    assert error_code(exc) == "PreconditionFailed"
    assert s3.get_object(Bucket="models", Key="etag/model.bin")["Body"].read() == b"v2"


def test_retried_completion_answers_the_same_version(s3: BaseClient) -> None:
    first, last = os.urandom(5 * MIB), b"tail"
    upload, parts = upload_parts(s3, "models", "retry/a.bin", first, last)
    done = complete(s3, "models", "retry/a.bin", upload, parts)
    again = complete(s3, "models", "retry/a.bin", upload, parts)
    assert (again["ETag"], again["VersionId"]) == (done["ETag"], done["VersionId"])
    versions = s3.list_objects_v2(Bucket="models", Prefix="retry/")["Contents"]
    assert len(versions) == 1
    # Another part list, or the id under another key, is no retry of that completion.
    for key, listed in (("retry/a.bin", parts[:1]), ("retry/b.bin", parts)):
        with pytest.raises(ClientError) as exc:
            complete(s3, "models", key, upload, listed)
        assert error_code(exc) == "NoSuchUpload"
    assert s3.get_object(Bucket="models", Key="retry/a.bin")["Body"].read() == first + last


def test_reading_one_part(s3: BaseClient) -> None:
    first, last = os.urandom(5 * MIB), os.urandom(3000)
    upload, parts = upload_parts(s3, "models", "parts/x.bin", first, last)
    done = complete(s3, "models", "parts/x.bin", upload, parts)
    for number, body in ((1, first), (2, last)):
        got = s3.get_object(Bucket="models", Key="parts/x.bin", PartNumber=number)
        assert got["Body"].read() == body
        assert got["PartsCount"] == 2 and got["ETag"] == done["ETag"]
        assert got["ContentLength"] == len(body)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        head = s3.head_object(Bucket="models", Key="parts/x.bin", PartNumber=number)
        assert head["ContentLength"] == len(body) and head["PartsCount"] == 2
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="models", Key="parts/x.bin", PartNumber=3)
    assert error_code(exc) == "InvalidPartNumber"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="models", Key="parts/x.bin", PartNumber=1, Range="bytes=0-1")
    assert error_code(exc) == "InvalidRequest"
    # An object written whole is its own part 1.
    s3.put_object(Bucket="models", Key="parts/whole.bin", Body=b"whole")
    got = s3.get_object(Bucket="models", Key="parts/whole.bin", PartNumber=1)
    assert got["Body"].read() == b"whole" and got["PartsCount"] == 1


def test_upload_part_copy(s3: BaseClient) -> None:
    source = os.urandom(6 * MIB)
    s3.put_object(Bucket="datasets", Key="copy/source.npy", Body=source)
    upload = s3.create_multipart_upload(Bucket="models", Key="copy/dest.bin")["UploadId"]
    src = {"Bucket": "datasets", "Key": "copy/source.npy"}
    common = {"Bucket": "models", "Key": "copy/dest.bin", "UploadId": upload, "CopySource": src}
    parts = []
    for number, (start, end) in enumerate(((0, 5 * MIB - 1), (5 * MIB, 6 * MIB - 1)), start=1):
        result = s3.upload_part_copy(
            **common, PartNumber=number, CopySourceRange=f"bytes={start}-{end}"
        )["CopyPartResult"]
        assert result["ETag"] == f'"{md5(source[start : end + 1])}"'
        parts.append({"PartNumber": number, "ETag": result["ETag"]})
    # A whole-object copy as part 3 replaced by nothing: refused copies store nothing.
    refusals = [
        ({"CopySourceRange": "0-2"}, "InvalidArgument"),
        ({"CopySourceRange": "bytes=0-2,3-5"}, "InvalidArgument"),
        ({"CopySourceRange": f"bytes=0-{6 * MIB}"}, "InvalidRange"),
        ({"CopySourceIfMatch": '"0123"'}, "PreconditionFailed"),
        ({"CopySourceIfNoneMatch": f'"{md5(source)}"'}, "PreconditionFailed"),
    ]
    for extra, code in refusals:
        with pytest.raises(ClientError) as exc:
            s3.upload_part_copy(**common, PartNumber=3, **extra)
        assert error_code(exc) == code, extra
    listed = s3.list_parts(Bucket="models", Key="copy/dest.bin", UploadId=upload)["Parts"]
    assert [p["PartNumber"] for p in listed] == [1, 2]
    done = complete(s3, "models", "copy/dest.bin", upload, parts)
    assert done["ETag"] == s3_etag(source[: 5 * MIB], source[5 * MIB :])
    assert s3.get_object(Bucket="models", Key="copy/dest.bin")["Body"].read() == source


def test_list_parts_pages(s3: BaseClient) -> None:
    upload, _ = upload_parts(s3, "models", "pages/p.bin", b"1", b"22", b"333")
    pages = []
    marker = 0
    while True:
        page = s3.list_parts(
            Bucket="models", Key="pages/p.bin", UploadId=upload, MaxParts=2,
            PartNumberMarker=marker,
        )  # fmt: skip
        pages.append([(p["PartNumber"], p["Size"]) for p in page["Parts"]])
        if not page["IsTruncated"]:
            break
        marker = page["NextPartNumberMarker"]
    assert pages == [[(1, 1), (2, 2)], [(3, 3)]]
    s3.abort_multipart_upload(Bucket="models", Key="pages/p.bin", UploadId=upload)


def test_list_multipart_uploads_pages_prefix_delimiter(s3: BaseClient) -> None:
    keys = ["mu/a", "mu/a", "mu/b", "mu/dir/c", "mu/dir/d", "other"]
    uploads = [
        (key, s3.create_multipart_upload(Bucket="artifacts", Key=key)["UploadId"]) for key in keys
    ]
    expected = sorted(u for u in uploads if u[0].startswith("mu/"))
    seen: list[tuple[str, str]] = []
    markers: dict[str, str] = {}
    while True:
        page = s3.list_multipart_uploads(Bucket="artifacts", Prefix="mu/", MaxUploads=2, **markers)
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        assert len(page.get("Uploads", [])) <= 2
        if not page["IsTruncated"]:
            break
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    assert seen == expected
    grouped = s3.list_multipart_uploads(Bucket="artifacts", Prefix="mu/", Delimiter="/")
    assert [p["Prefix"] for p in grouped["CommonPrefixes"]] == ["mu/dir/"]
    assert [u["Key"] for u in grouped["Uploads"]] == ["mu/a", "mu/a", "mu/b"]
    assert grouped["Uploads"][0]["Initiator"]["ID"]
    for key, upload in uploads:
        s3.abort_multipart_upload(Bucket="artifacts", Key=key, UploadId=upload)


def test_completion_errors_store_nothing(s3: BaseClient) -> None:
    small, big = os.urandom(1000), os.urandom(5 * MIB)
    upload, parts = upload_parts(s3, "models", "bad/x.bin", small, big, b"end")
    wrong_etag = [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]
    cases = [
        (wrong_etag, "InvalidPart"),
        ([{"PartNumber": 4, "ETag": parts[0]["ETag"]}], "InvalidPart"),
        ([parts[1], parts[0]], "InvalidPartOrder"),
        (parts, "EntityTooSmall"),  # part 1 is below 5 MiB and not the last
    ]
    for listed, code in cases:
        with pytest.raises(ClientError) as exc:
            complete(s3, "models", "bad/x.bin", upload, listed)
        assert error_code(exc) == code
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:
        complete(s3, "models", "bad/x.bin", "0" * 32, parts)
    assert error_code(exc) == "NoSuchUpload"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket="models", Key="bad/x.bin")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # The session is still open: the right part list completes it.
    done = complete(s3, "models", "bad/x.bin", upload, parts[1:])
    assert done["ETag"] == s3_etag(big, b"end")


def test_slow_completion_answers_200_early_and_late_errors_inside_it(tmp_path: Path) -> None:
    """With S3_COMPLETE_KEEPALIVE_SECONDS=0 every completion is answered before its
    result: boto3 reads the document after the early 200, and finds an error in it."""
    env = {"S3_PORT": "auto", "S3_COMPLETE_KEEPALIVE_SECONDS": "0"}
    proc = ServerProcess(tmp_path / "data", env, log_dir=tmp_path)
    proc.start()
    try:
        # One attempt: boto3 retries an error found in a 200 (as a 500) otherwise.
        key, secret = admin_keys(proc)
        s3 = boto3.client(
            "s3",
            endpoint_url=proc.s3_url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )
        first, last = os.urandom(5 * MIB), b"last"
        upload, parts = upload_parts(s3, "models", "slow/a.bin", first, last)
        done = complete(s3, "models", "slow/a.bin", upload, parts)
        assert done["ETag"] == s3_etag(first, last)
        # Streamed: no length was known when the answer started.
        assert "content-length" not in done["ResponseMetadata"]["HTTPHeaders"]
        assert s3.get_object(Bucket="models", Key="slow/a.bin")["Body"].read() == first + last
        # The quota shrinks after the parts are in: the commit, after the 200, refuses.
        upload, parts = upload_parts(s3, "datasets", "slow/b.npy", first, last)
        with proc.client() as rest:
            changed = rest.put("/api/v1/buckets/datasets", json={"quota_bytes": 1000})
            assert changed.status_code == 200, changed.text
        with pytest.raises(ClientError) as exc:
            complete(s3, "datasets", "slow/b.npy", upload, parts)
        assert error_code(exc) == "QuotaExceeded"
        with pytest.raises(ClientError):
            s3.head_object(Bucket="datasets", Key="slow/b.npy")
        # Refused, the session stays for a retry or an abort.
        s3.abort_multipart_upload(Bucket="datasets", Key="slow/b.npy", UploadId=upload)
    finally:
        proc.stop()


def test_on_postgresql(postgres_database: str, tmp_path: Path) -> None:
    env = {"S3_PORT": "auto", "DATABASE_URL": postgres_database}
    proc = ServerProcess(tmp_path / "data", env, log_dir=tmp_path)
    proc.start()
    try:
        with proc.client() as rest:
            keys = new_keys(rest, buckets=["models"])
        s3 = s3_client(proc, keys["access_key_id"], keys["secret_access_key"])
        first, last = os.urandom(5 * MIB), b"pg"
        upload, parts = upload_parts(s3, "models", "pg/a.bin", first, last)
        done = complete(s3, "models", "pg/a.bin", upload, parts)
        assert done["ETag"] == s3_etag(first, last)
        assert complete(s3, "models", "pg/a.bin", upload, parts)["VersionId"] == done["VersionId"]
        got = s3.get_object(Bucket="models", Key="pg/a.bin", PartNumber=2)
        assert got["Body"].read() == b"pg" and got["ETag"] == done["ETag"]
        opened = sorted(
            s3.create_multipart_upload(Bucket="models", Key=f"pg/k{i}.bin")["UploadId"]
            for i in range(3)
        )
        page = s3.list_multipart_uploads(Bucket="models", Prefix="pg/", MaxUploads=2)
        assert page["IsTruncated"] and len(page["Uploads"]) == 2
        rest_page = s3.list_multipart_uploads(
            Bucket="models", Prefix="pg/", KeyMarker=page["NextKeyMarker"],
            UploadIdMarker=page["NextUploadIdMarker"],
        )  # fmt: skip
        assert len(rest_page["Uploads"]) == 1 and not rest_page["IsTruncated"]
        assert len(opened) == 3
    finally:
        proc.stop()
