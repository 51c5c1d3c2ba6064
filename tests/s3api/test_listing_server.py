"""ListObjects (v1) and ListObjectsV2 documents from a real server, read as XML: every
entry's fields, escaping, encoding-type=url, owners, paging and common prefixes."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import Element, fromstring

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.client import BaseClient
from botocore.credentials import Credentials

from tests.s3api.test_endpoint_server import REGION, admin_keys
from tests.server.conftest import ServerProcess

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
BUCKET = "listing-xml"
KEYS = sorted(
    [
        "a&b<c>\"d'e.txt",
        "dir/x y+z",
        "dir/é/ü.bin",
        "dir/sub/deep",
        "\U0001f600.bin",
        "plain",
        "percent%2F",
        "cdata]]>end",
    ]
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def stored(s3: BaseClient) -> dict[str, dict[str, Any]]:
    """The bucket's keys, each with its HeadObject (what its listing entry must say)."""
    s3.create_bucket(Bucket=BUCKET)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=key.encode() * 3)
    # One assembled from parts: listed with S3's multipart ETag.
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="multi")["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key="multi", UploadId=upload, PartNumber=1, Body=b"p")
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key="multi",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    s3.put_object(Bucket=BUCKET, Key="trashed", Body=b"t")
    s3.delete_object(Bucket=BUCKET, Key="trashed")
    return {k: s3.head_object(Bucket=BUCKET, Key=k) for k in [*KEYS, "multi"]}


# The query's names, as S3 spells them.
_PARAMS = {
    "Delimiter": "delimiter",
    "EncodingType": "encoding-type",
    "FetchOwner": "fetch-owner",
    "Prefix": "prefix",
    "MaxKeys": "max-keys",
    "StartAfter": "start-after",
    "ContinuationToken": "continuation-token",
    "Marker": "marker",
}


def listing(server: ServerProcess, operation: str, **params: Any) -> tuple[bytes, Element]:
    """The raw document and its root. Signed by botocore but sent by hand: boto3 itself
    always asks for encoding-type=url and decodes what comes back."""
    query = {
        _PARAMS[name]: str(value).lower() if value is True else str(value)
        for name, value in params.items()
    }
    if operation == "list_objects_v2":
        query["list-type"] = "2"
    url = f"{server.s3_url}/{BUCKET}?" + "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(query.items())
    )
    request = AWSRequest("GET", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    SigV4Auth(Credentials(*admin_keys(server)), "s3", REGION).add_auth(request)
    answer = httpx.get(url, headers=dict(request.headers.items()), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.content, fromstring(answer.content)


def text(node: Element, tag: str) -> str | None:
    return node.findtext(f"{NS}{tag}")


def test_every_entry_says_what_head_object_says(
    server: ServerProcess, stored: dict[str, dict[str, Any]]
) -> None:
    raw, root = listing(server, "list_objects_v2", FetchOwner=True)
    assert text(root, "KeyCount") == str(len(stored))
    entries = root.findall(f"{NS}Contents")
    assert [text(e, "Key") for e in entries] == sorted(stored)  # byte order, trashed left out
    for entry in entries:
        key = text(entry, "Key")
        assert key is not None
        head = stored[key]
        assert text(entry, "ETag") == head["ETag"]
        assert text(entry, "Size") == str(head["ContentLength"])
        modified = text(entry, "LastModified") or ""
        assert len(modified) == 24 and modified.endswith("Z"), modified  # ...T..:..:..mmmZ
        assert modified[:19] == head["LastModified"].strftime("%Y-%m-%dT%H:%M:%S")
        assert text(entry, "StorageClass") == "STANDARD"
        owner = entry.find(f"{NS}Owner")
        assert owner is not None and text(owner, "ID") == text(owner, "DisplayName") != ""
    multi = next(e for e in entries if text(e, "Key") == "multi")
    assert text(multi, "ETag") == f'"{hashlib.md5(hashlib.md5(b"p").digest()).hexdigest()}-1"'
    # Escaped as XML requires.
    assert b"<Key>a&amp;b&lt;c&gt;" in raw and b"<Key>cdata]]&gt;end</Key>" in raw
    _, bare = listing(server, "list_objects_v2")
    assert bare.find(f"{NS}Contents/{NS}Owner") is None  # no owner unless asked


def test_encoding_type_url(server: ServerProcess, stored: dict[str, dict[str, Any]]) -> None:
    _, root = listing(server, "list_objects_v2", EncodingType="url", Delimiter="/", Prefix="dir/")
    assert text(root, "EncodingType") == "url"
    assert text(root, "Prefix") == "dir/" and text(root, "Delimiter") == "/"
    keys = [text(e, "Key") for e in root.findall(f"{NS}Contents")]
    assert keys == [quote("dir/x y+z", safe="/")]
    prefixes = [text(p, "Prefix") for p in root.findall(f"{NS}CommonPrefixes")]
    assert prefixes == [quote("dir/sub/", safe="/"), quote("dir/é/", safe="/")]
    _, root = listing(server, "list_objects_v2", EncodingType="url")
    keys = [text(e, "Key") for e in root.findall(f"{NS}Contents")]
    assert keys == [quote(k, safe="/") for k in sorted(stored)]


@pytest.mark.parametrize("operation", ["list_objects_v2", "list_objects"])
def test_pages_of_two_cover_the_bucket_once(
    server: ServerProcess, stored: dict[str, dict[str, Any]], operation: str
) -> None:
    seen: list[str] = []
    after: dict[str, str] = {}
    while True:
        _, root = listing(server, operation, MaxKeys=2, **after)
        page = [text(e, "Key") or "" for e in root.findall(f"{NS}Contents")]
        assert len(page) <= 2 and text(root, "MaxKeys") == "2"
        seen += page
        if text(root, "IsTruncated") != "true":
            break
        if operation == "list_objects_v2":
            after = {"ContinuationToken": text(root, "NextContinuationToken") or ""}
        else:
            assert text(root, "NextMarker") == page[-1]
            after = {"Marker": page[-1]}
    assert seen == sorted(stored)
    _, root = listing(server, "list_objects_v2", StartAfter="dir/x y+z", MaxKeys=1)
    assert [text(e, "Key") for e in root.findall(f"{NS}Contents")] == ["dir/é/ü.bin"]
    assert text(root, "StartAfter") == "dir/x y+z"
    _, root = listing(server, "list_objects_v2", MaxKeys=0)
    assert root.find(f"{NS}Contents") is None and text(root, "KeyCount") == "0"


def test_delimiter_groups_once_across_pages(
    server: ServerProcess, stored: dict[str, dict[str, Any]]
) -> None:
    entries: list[str] = []
    token: dict[str, str] = {}
    while True:
        _, root = listing(server, "list_objects_v2", Delimiter="/", MaxKeys=1, **token)
        entries += [text(e, "Key") or "" for e in root.findall(f"{NS}Contents")]
        entries += [text(p, "Prefix") or "" for p in root.findall(f"{NS}CommonPrefixes")]
        assert text(root, "KeyCount") == "1"
        if text(root, "IsTruncated") != "true":
            break
        token = {"ContinuationToken": text(root, "NextContinuationToken") or ""}
    top = {k if "/" not in k else k[: k.index("/") + 1] for k in stored}
    assert entries == sorted(top)
