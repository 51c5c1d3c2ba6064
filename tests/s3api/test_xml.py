"""S3 error documents, and request XML through the hardened parser (boto3's own bodies)."""

from __future__ import annotations

import base64
from xml.etree.ElementTree import fromstring

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfstorage import errors
from tfstorage.s3api import xml
from tfstorage.s3api.errors import (
    _NOT_XML,
    MalformedXML,
    MaxMessageLengthExceeded,
    SignatureDoesNotMatch,
    render_error,
    xml_text,
)

from .clients import boto3_request, pieces

pytestmark = pytest.mark.anyio


def _fields(document: bytes) -> dict[str, str]:
    root = fromstring(document)  # our own output, trusted
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (errors.NoSuchKey("models", "a<b>&c"), "NoSuchKey", 404),
        (errors.NoSuchBucket("models"), "NoSuchBucket", 404),
        (errors.BadDigest(), "BadDigest", 400),
        (errors.EntityTooLarge(5), "EntityTooLarge", 413),
        (errors.PreconditionFailed(), "PreconditionFailed", 412),
        (errors.BucketNotEmpty("b"), "BucketNotEmpty", 409),
        (errors.SlowDown(), "SlowDown", 503),
        (errors.InvalidRange(10), "InvalidRange", 416),
        (SignatureDoesNotMatch(), "SignatureDoesNotMatch", 403),
        (errors.Unauthenticated(), "AccessDenied", 403),
        (errors.ScrubInProgress(), "OperationAborted", 409),
        (errors.RequestTooLarge(), "MaxMessageLengthExceeded", 400),
        (errors.ObjectCorrupted("blob 123 is gone from its volume"), "InternalError", 500),
        (errors.InternalError("psycopg: SELECT * FROM secrets"), "InternalError", 500),
    ],
)
def test_errors_render_as_s3_xml(error: errors.StorageError, code: str, status: int) -> None:
    response = render_error(error, resource="/models/a<b>&c", request_id="req-1")
    assert response.status == status
    assert response.headers["Content-Type"] == "application/xml"
    fields = _fields(response.body)
    assert fields["Code"] == code
    assert fields["Resource"] == "/models/a<b>&c"
    assert fields["RequestId"] == "req-1"
    if status >= 500:
        assert fields["Message"] == error.default_message  # never the internal detail
    else:
        assert fields["Message"] == error.message


def test_error_headers_survive_and_control_characters_cannot_break_the_document() -> None:
    response = render_error(errors.InvalidRange(10), resource="/b/k\x00\x1b", request_id="r")
    assert response.headers["Content-Range"] == "bytes */10"
    assert _fields(response.body)["Resource"] == "/b/k\ufffd\ufffd"
    assert (
        render_error(errors.SlowDown(), resource="/", request_id="r").headers["Retry-After"] == "5"
    )


def test_boto3_delete_objects_body_parses() -> None:
    keys = ["a b", "ünï/cødé", "x&y<z>", "v"]
    sent = boto3_request(
        "delete_objects",
        Bucket="b",
        Delete={
            "Objects": [{"Key": k} for k in keys[:3]] + [{"Key": "v", "VersionId": "3"}],
            "Quiet": True,
        },
    )
    parsed = xml.parse_delete_objects(sent.body)
    assert [o.key for o in parsed.objects] == keys
    assert parsed.objects[3].version_id == "3" and parsed.objects[0].version_id is None
    assert parsed.quiet is True


def test_boto3_complete_multipart_upload_body_parses() -> None:
    crc = base64.b64encode(b"\x01\x02\x03\x04").decode()
    sent = boto3_request(
        "complete_multipart_upload",
        Bucket="b",
        Key="k",
        UploadId="u",
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": '"etag1"', "ChecksumCRC32": crc},
                {"PartNumber": 2, "ETag": '"etag2"'},
            ]
        },
    )
    parsed = xml.parse_complete_multipart_upload(sent.body)
    assert [(p.part_number, p.etag) for p in parsed.parts] == [(1, '"etag1"'), (2, '"etag2"')]
    assert parsed.parts[0].checksums == {"crc32": crc}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Delete><Object><Key>&lol2;</Key></Object></Delete>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY x SYSTEM "file:///nonexistent/secret">]>
<Delete><Object><Key>&x;</Key></Object></Delete>"""
DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://example.test/x.dtd">
<Delete><Object><Key>k</Key></Object></Delete>"""


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        XXE,
        DTD_ONLY,
        b"<Delete><Object><Key>k</Key></Object>",
        b"not xml",
        b"",
        b"<Other><Object><Key>k</Key></Object></Other>",
        b"<Delete></Delete>",
        b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",
        b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
        b"<Delete><Object><Key>k</Key></Object><Quiet>maybe</Quiet></Delete>",
        b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    ],
)
def test_bad_delete_documents_are_malformed_xml(document: bytes) -> None:
    with pytest.raises(MalformedXML) as caught:
        xml.parse_delete_objects(document)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "part",
    [
        b"<PartNumber>0</PartNumber><ETag>e</ETag>",
        b"<PartNumber>10001</PartNumber><ETag>e</ETag>",
        b"<PartNumber>x</PartNumber><ETag>e</ETag>",
        b"<PartNumber>1</PartNumber>",
        b"<ETag>e</ETag>",
    ],
)
def test_bad_parts_are_malformed_xml(part: bytes) -> None:
    with pytest.raises(MalformedXML):
        xml.parse_complete_multipart_upload(
            b"<CompleteMultipartUpload><Part>" + part + b"</Part></CompleteMultipartUpload>"
        )


def test_a_bad_part_checksum_is_an_invalid_digest() -> None:
    document = (
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>e</ETag>"
        b"<ChecksumSHA256>short</ChecksumSHA256></Part></CompleteMultipartUpload>"
    )
    with pytest.raises(errors.InvalidDigest):
        xml.parse_complete_multipart_upload(document)


async def test_read_capped_stops_at_the_limit() -> None:
    assert await xml.read_capped(pieces(b"x" * 100, 7), limit=100) == b"x" * 100
    pulled: list[int] = []

    async def endless():  # type: ignore[no-untyped-def]
        while True:
            pulled.append(1)
            yield b"x" * 1000

    with pytest.raises(MaxMessageLengthExceeded):
        await xml.read_capped(endless(), limit=10_000)
    assert len(pulled) == 11
    with pytest.raises(MaxMessageLengthExceeded):
        xml.parse(b"<a/>" + b" " * 100, root="a", limit=50)


@given(st.text())
def test_element_text_round_trips_through_a_parser(value: str) -> None:
    """Escaped where needed, characters XML cannot carry replaced, and nothing else
    touched (most keys take the fast path that returns them as they are)."""
    text = xml_text(value)
    parsed = fromstring(f"<Key>{text}</Key>".encode()).text or ""
    expected = "".join(c if not _NOT_XML.match(c) else "\ufffd" for c in value)
    assert parsed == expected.replace("\r\n", "\n").replace("\r", "\n")  # XML line ends
