"""The reader stack chosen from the signature: what boto3 sends reads back as the object."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tfstorage.errors import BadDigest, LengthRequired
from tfstorage.s3api import body, sigv4
from tfstorage.s3api.errors import UnsupportedAuthorization, XAmzContentSHA256Mismatch

from .clients import Sent, boto3_request, collect, lookup, pieces

pytestmark = pytest.mark.anyio

DATA = b"checkpoint shard " * 4096


async def _object(sent: Sent, wire: bytes | None = None) -> bytes:
    auth = sigv4.verify(sent.signed(), lookup, region="us-east-1")
    stream = body.object_body(
        pieces(sent.body if wire is None else wire, 8192), sent.lower_headers(), auth
    )
    return await collect(stream)


@pytest.mark.parametrize("endpoint", ["https://s3.example.test", "http://127.0.0.1:8084"])
@pytest.mark.parametrize("algorithm", [None, "CRC32C", "SHA256"])
async def test_boto3_uploads_read_back(endpoint: str, algorithm: str | None) -> None:
    extra = {"ChecksumAlgorithm": algorithm} if algorithm else {}
    sent = boto3_request("put_object", endpoint=endpoint, Bucket="b", Key="k", Body=DATA, **extra)
    assert await _object(sent) == DATA


@pytest.mark.parametrize("endpoint", ["https://s3.example.test", "http://127.0.0.1:8084"])
async def test_boto3_upload_part_and_content_md5_read_back(endpoint: str) -> None:
    md5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    sent = boto3_request(
        "upload_part",
        endpoint=endpoint,
        Bucket="b",
        Key="k",
        UploadId="u",
        PartNumber=1,
        Body=DATA,
        ContentMD5=md5,
    )
    assert sent.header("Content-MD5") == md5
    assert await _object(sent) == DATA


async def test_a_signed_payload_hash_is_enforced() -> None:
    sent = boto3_request(
        "put_object", endpoint="http://127.0.0.1:8084", Bucket="b", Key="k", Body=DATA
    )
    wire = DATA[:-1] + b"?"
    with pytest.raises((XAmzContentSHA256Mismatch, BadDigest)) as caught:
        await _object(sent, wire)
    # The header checksum (CRC32) and the payload hash both catch it; the hash comes first.
    assert isinstance(caught.value, XAmzContentSHA256Mismatch)


async def test_a_header_checksum_is_enforced_on_unsigned_payloads() -> None:
    sent = boto3_request(
        "put_object", endpoint="http://127.0.0.1:8084", Bucket="b", Key="k", Body=DATA
    )
    request = sent.signed()
    auth = sigv4.verify(request, lookup, region="us-east-1")
    assert auth is not None
    unsigned = sigv4.Authenticated(**{**auth.__dict__, "content_sha256": sigv4.UNSIGNED_PAYLOAD})
    with pytest.raises(BadDigest, match="CRC32"):
        await collect(body.object_body(pieces(DATA + b"!", 999), sent.lower_headers(), unsigned))


async def test_an_unsigned_trailer_upload_with_a_bad_byte_is_refused() -> None:
    sent = boto3_request("put_object", Bucket="b", Key="k", Body=DATA)
    wire = bytearray(sent.body)
    wire[500] ^= 0xFF
    with pytest.raises(BadDigest):
        await _object(sent, bytes(wire))


def test_streaming_needs_its_decoded_length() -> None:
    sent = boto3_request("put_object", Bucket="b", Key="k", Body=DATA)
    auth = sigv4.verify(sent.signed(), lookup, region="us-east-1")
    headers = sent.lower_headers()
    del headers["x-amz-decoded-content-length"]
    with pytest.raises(LengthRequired):
        body.object_body(pieces(sent.body, 10), headers, auth)


def test_a_signed_stream_without_a_signature_is_refused() -> None:
    headers = {"x-amz-content-sha256": sigv4.STREAMING_SIGNED, "x-amz-decoded-content-length": "1"}
    with pytest.raises(UnsupportedAuthorization):
        body.object_body(pieces(b"", 1), headers, None)
