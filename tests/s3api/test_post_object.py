"""S3 POST Object against a real server: boto3's generate_presigned_post, sent by httpx.

Each refusal is checked by its S3 error code and by the key staying absent, both through
S3 and through the REST API; an accepted upload is read back through the REST API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import admin_keys, new_keys, rest_object, s3_client
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)

BUCKET = "datasets"


def presigned(
    s3: BaseClient,
    key: str,
    *,
    fields: dict[str, str] | None = None,
    conditions: list[Any] | None = None,
    bucket: str = BUCKET,
    expires: int = 600,
) -> dict[str, Any]:
    post: dict[str, Any] = s3.generate_presigned_post(
        bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=expires
    )
    return post


def send(
    post: dict[str, Any],
    data: bytes,
    *,
    filename: str = "upload.bin",
    extra: dict[str, str] | None = None,
    url: str | None = None,
) -> httpx.Response:
    fields = {**post["fields"], **(extra or {})}
    return httpx.post(url or post["url"], data=fields, files={"file": (filename, data)})


def code_of(response: httpx.Response) -> str:
    return ET.fromstring(response.content).findtext("Code") or ""


def absent(s3: BaseClient, rest: httpx.Client, key: str, bucket: str = BUCKET) -> bool:
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)
    return rest_object(rest, bucket, key).status_code == 404


def test_upload_is_the_same_object_through_rest(s3: BaseClient, rest: httpx.Client) -> None:
    data = os.urandom(300_000)
    post = presigned(
        s3,
        "post/data.npy",
        fields={"Content-Type": "application/octet-stream", "x-amz-meta-run": "7"},
        conditions=[
            {"Content-Type": "application/octet-stream"},
            {"x-amz-meta-run": "7"},
            ["content-length-range", 1, 1_000_000],
        ],
    )
    response = send(post, data)
    assert response.status_code == 204, response.text
    assert response.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    through_rest = rest_object(rest, BUCKET, "post/data.npy")
    assert through_rest.status_code == 200
    assert hashlib.sha256(through_rest.content).hexdigest() == hashlib.sha256(data).hexdigest()
    head = s3.head_object(Bucket=BUCKET, Key="post/data.npy")
    assert head["Metadata"] == {"run": "7"}
    assert head["ContentType"] == "application/octet-stream"


def test_filename_variable_success_status_201_and_tagging(
    s3: BaseClient, rest: httpx.Client
) -> None:
    tagging = "<Tagging><TagSet><Tag><Key>stage</Key><Value>dev</Value></Tag></TagSet></Tagging>"
    post = presigned(
        s3,
        "uploads/${filename}",
        fields={"success_action_status": "201", "tagging": tagging},
        conditions=[
            ["starts-with", "$key", "uploads/"],
            {"success_action_status": "201"},
            ["starts-with", "$tagging", ""],
        ],
    )
    response = send(post, b"hello", filename="notes.txt")
    assert response.status_code == 201, response.text
    root = ET.fromstring(response.content)
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    assert root.tag == f"{{{ns['s3']}}}PostResponse"
    assert root.findtext("s3:Key", namespaces=ns) == "uploads/notes.txt"
    assert root.findtext("s3:Bucket", namespaces=ns) == BUCKET
    assert rest_object(rest, BUCKET, "uploads/notes.txt").content == b"hello"
    tags = s3.get_object_tagging(Bucket=BUCKET, Key="uploads/notes.txt")["TagSet"]
    assert tags == [{"Key": "stage", "Value": "dev"}]


def test_fields_after_the_file_are_ignored(s3: BaseClient, rest: httpx.Client) -> None:
    post = presigned(s3, "post/late.txt")
    boundary = "post-object-boundary"

    def part(name: str, value: bytes, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        return (
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        )

    body = b"".join(
        [
            *(part(name, value.encode()) for name, value in post["fields"].items()),
            part("file", b"late body", "late.txt"),
            part("x-amz-meta-late", b"1"),  # not covered by the policy, yet not refused
            f"--{boundary}--\r\n".encode(),
        ]
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    response = httpx.post(post["url"], content=body, headers={"Content-Type": content_type})
    assert response.status_code == 204, response.text
    assert response.headers["Location"] == post["url"] + "/post/late.txt"
    assert rest_object(rest, BUCKET, "post/late.txt").content == b"late body"
    assert s3.head_object(Bucket=BUCKET, Key="post/late.txt")["Metadata"] == {}


def test_redirect_carries_bucket_key_and_etag(s3: BaseClient) -> None:
    target = "https://example.com/done"
    post = presigned(
        s3,
        "post/redirected.txt",
        fields={"success_action_redirect": target},
        conditions=[{"success_action_redirect": target}],
    )
    response = send(post, b"abc")
    assert response.status_code == 303, response.text
    location = response.headers["Location"]
    assert location.startswith(target + "?bucket=datasets&key=post%2Fredirected.txt&etag=")


def test_checksum_field_is_verified(s3: BaseClient, rest: httpx.Client) -> None:
    data = b"checked bytes"
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    for value, key in ((bad, "post/bad-sum.txt"), (good, "post/good-sum.txt")):
        post = presigned(
            s3,
            key,
            fields={"x-amz-checksum-sha256": value},
            conditions=[{"x-amz-checksum-sha256": value}],
        )
        response = send(post, data)
        if value == bad:
            assert response.status_code == 400
            assert code_of(response) == "BadDigest"
            assert absent(s3, rest, key)
        else:
            assert response.status_code == 204, response.text


def refused(
    s3: BaseClient, rest: httpx.Client, response: httpx.Response, key: str
) -> tuple[int, str, str]:
    assert absent(s3, rest, key)
    message = ET.fromstring(response.content).findtext("Message") or ""
    return response.status_code, code_of(response), message


def test_refusals_store_nothing(s3: BaseClient, rest: httpx.Client) -> None:
    key = "refused/file.txt"
    # Too large and too small for the content-length-range.
    post = presigned(s3, key, conditions=[["content-length-range", 5, 10]])
    assert refused(s3, rest, send(post, b"x" * 11), key)[:2] == (400, "EntityTooLarge")
    assert refused(s3, rest, send(post, b"x" * 4), key)[:2] == (400, "EntityTooSmall")
    # A field the policy does not cover.
    status, code, message = refused(
        s3, rest, send(post, b"x" * 6, extra={"x-amz-meta-extra": "1"}), key
    )
    assert (status, code) == (403, "AccessDenied")
    assert "Extra input fields: x-amz-meta-extra" in message
    # A field that breaks a condition.
    post = presigned(
        s3, key, fields={"Content-Type": "text/plain"}, conditions=[{"Content-Type": "text/plain"}]
    )
    status, code, message = refused(
        s3, rest, send(post, b"abc", extra={"Content-Type": "text/html"}), key
    )
    assert (status, code) == (403, "AccessDenied")
    assert message.startswith("Invalid according to Policy: Policy Condition failed")
    # Another key than the signed one, another bucket than the signed one.
    other = "refused/other.txt"
    assert refused(s3, rest, send(post, b"abc", extra={"key": other}), other)[:2] == (
        403,
        "AccessDenied",
    )
    wrong_bucket = post["url"].rsplit("/", 1)[0] + "/models"
    response = send(post, b"abc", url=wrong_bucket)
    assert refused(
        s3,
        rest,
        response,
        key,
    )[:2] == (403, "AccessDenied")
    assert absent(s3, rest, key, bucket="models")
    # An expired policy.
    expired = presigned(s3, key, expires=-10)
    status, code, message = refused(s3, rest, send(expired, b"abc"), key)
    assert (status, code, message) == (
        403,
        "AccessDenied",
        "Invalid according to Policy: Policy expired.",
    )


def test_signature_refusals(s3: BaseClient, rest: httpx.Client, server: ServerProcess) -> None:
    key = "refused/signature.txt"
    post = presigned(s3, key)
    signature = post["fields"]["x-amz-signature"]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    response = send(post, b"abc", extra={"x-amz-signature": forged})
    assert refused(s3, rest, response, key)[:2] == (403, "SignatureDoesNotMatch")
    # A policy edited after signing (here: a longer expiration) no longer matches.
    document = json.loads(base64.b64decode(post["fields"]["policy"]))
    document["expiration"] = "2099-01-01T00:00:00Z"
    edited = base64.b64encode(json.dumps(document).encode()).decode()
    response = send(post, b"abc", extra={"policy": edited})
    assert refused(s3, rest, response, key)[:2] == (403, "SignatureDoesNotMatch")
    # An unknown access key.
    stranger = s3_client(server, "TFSKUNKNOWNKEY000000", "secret")
    response = send(presigned(stranger, key), b"abc")
    assert refused(s3, rest, response, key)[:2] == (403, "InvalidAccessKeyId")
    # A signed field missing.
    fields = dict(post["fields"])
    del fields["x-amz-credential"]
    response = httpx.post(post["url"], data=fields, files={"file": ("f", b"abc")})
    assert refused(s3, rest, response, key)[:2] == (400, "InvalidArgument")
    # A SigV2 form (AWSAccessKeyId + signature): refused as every SigV2 request is.
    v2 = {"key": key, "AWSAccessKeyId": admin_keys(server)[0], "signature": "x", "policy": "e30="}
    response = httpx.post(post["url"], data=v2, files={"file": ("f", b"abc")})
    assert refused(s3, rest, response, key)[:2] == (400, "InvalidArgument")


def test_malformed_policies(s3: BaseClient, rest: httpx.Client) -> None:
    key = "refused/policy.txt"
    for conditions in ([["content-length-range", -1, 0]], [["content-length-range", 0]], [{}]):
        post = presigned(s3, key, conditions=conditions)
        response = send(post, b"abc")
        assert refused(s3, rest, response, key)[:2] == (400, "InvalidPolicyDocument")


def test_token_scope_and_anonymous(
    server: ServerProcess, s3: BaseClient, rest: httpx.Client
) -> None:
    key = "refused/reader.txt"
    reader = new_keys(rest, name="post-reader", scopes=["read"])
    client = s3_client(server, reader["access_key_id"], reader["secret_access_key"])
    response = send(presigned(client, key), b"abc")
    assert refused(s3, rest, response, key)[:2] == (403, "AccessDenied")
    # Anonymous: no signature fields at all, even on a public-read bucket.
    s3.put_bucket_acl(Bucket=BUCKET, ACL="public-read")
    try:
        url = presigned(s3, key)["url"]
        response = httpx.post(url, data={"key": key}, files={"file": ("f", b"abc")})
        assert refused(s3, rest, response, key)[:2] == (403, "AccessDenied")
    finally:
        s3.put_bucket_acl(Bucket=BUCKET, ACL="private")
