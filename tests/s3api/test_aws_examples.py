"""AWS's published SigV4 examples for S3, verified byte for byte.

The requests, keys and signatures are the ones in the S3 API reference ("Examples:
Signature Calculations", "Authenticating Requests: Using Query Parameters", and the
chunked-upload and trailing-header examples). Matching them shows the server computes
SigV4 as AWS does, not merely as its own client would.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tfstorage.s3api import chunked, sigv4
from tfstorage.s3api.canonical import SignedRequest
from tfstorage.s3api.errors import SignatureDoesNotMatch

from .clients import ACCESS_KEY, ChunkEncoder, collect, example_signing_key, lookup, pieces

pytestmark = pytest.mark.anyio

WHEN = datetime(2013, 5, 24, tzinfo=UTC)
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SCOPE = "20130524/us-east-1/s3/aws4_request"


def _authorization(signed_headers: str, signature: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{SCOPE},"
        f"SignedHeaders={signed_headers},Signature={signature}"
    )


GET_OBJECT = SignedRequest(
    "GET",
    "/test.txt",
    "",
    [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", EMPTY),
        ("x-amz-date", "20130524T000000Z"),
        (
            "Authorization",
            _authorization(
                "host;range;x-amz-content-sha256;x-amz-date",
                "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ),
    ],
)

PUT_OBJECT = SignedRequest(
    "PUT",
    "/test%24file.text",
    "",
    [
        ("Host", "examplebucket.s3.amazonaws.com"),
        ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        (
            "x-amz-content-sha256",
            "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        ),
        (
            "Authorization",
            _authorization(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
            ),
        ),
    ],
)


def _bucket_get(query: str, signature: str) -> SignedRequest:
    return SignedRequest(
        "GET",
        "/",
        query,
        [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-content-sha256", EMPTY),
            ("Authorization", _authorization("host;x-amz-content-sha256;x-amz-date", signature)),
        ],
    )


LIFECYCLE = _bucket_get(
    "lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
)
LIST_OBJECTS = _bucket_get(
    "max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
)

PRESIGNED = SignedRequest(
    "GET",
    "/test.txt",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    [("Host", "examplebucket.s3.amazonaws.com")],
)


@pytest.mark.parametrize(
    "request_",
    [GET_OBJECT, PUT_OBJECT, LIFECYCLE, LIST_OBJECTS, PRESIGNED],
    ids=["get-object", "put-object", "get-lifecycle", "list-objects", "presigned-get"],
)
def test_published_examples_verify(request_: SignedRequest) -> None:
    auth = sigv4.verify(request_, lookup, region="us-east-1", now=WHEN)
    assert auth is not None
    assert auth.access_key == ACCESS_KEY
    assert auth.scope == SCOPE
    assert auth.presigned is (request_ is PRESIGNED)
    assert "signing_key" not in repr(auth)  # the day's key never reaches a log line


def test_published_presigned_example_is_valid_for_its_whole_day() -> None:
    late = datetime(2013, 5, 24, 23, 59, 59, tzinfo=UTC)
    assert sigv4.verify(PRESIGNED, lookup, region="us-east-1", now=late) is not None


def test_put_example_payload_hash_is_the_published_body() -> None:
    auth = sigv4.verify(PUT_OBJECT, lookup, region="us-east-1", now=WHEN)
    assert auth is not None
    import hashlib

    assert auth.content_sha256 == hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()


@pytest.mark.parametrize("request_", [GET_OBJECT, PUT_OBJECT, LIST_OBJECTS])
def test_published_examples_fail_with_another_secret(request_: SignedRequest) -> None:
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(request_, {ACCESS_KEY: "not-the-secret"}.get, region="us-east-1", now=WHEN)


# The chunked upload example: 66560 bytes of 'a' in chunks of 65536, 1024 and 0.
STREAMING_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
STREAMING_CHUNKS = [
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
]
# The same upload with a trailing CRC32C (AWS's trailing-headers example).
TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
TRAILER_CHUNKS = [
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
]
TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def _streaming_request(trailer: bool) -> SignedRequest:
    mode = sigv4.STREAMING_SIGNED_TRAILER if trailer else sigv4.STREAMING_SIGNED
    headers = [
        ("Host", "s3.amazonaws.com"),
        ("x-amz-date", "20130524T000000Z"),
        ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
        ("x-amz-content-sha256", mode),
        ("Content-Encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "66560"),
        ("Content-Length", "66824"),
    ]
    if trailer:
        signed = (
            "content-encoding;host;x-amz-content-sha256;x-amz-date;"
            "x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer"
        )
        headers.append(("x-amz-trailer", "x-amz-checksum-crc32c"))
        signature = TRAILER_SEED
    else:
        signed = (
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
            "x-amz-decoded-content-length;x-amz-storage-class"
        )
        signature = STREAMING_SEED
    headers.append(("Authorization", _authorization(signed, signature)))
    return SignedRequest("PUT", "/examplebucket/chunkObject.txt", "", headers)


def test_the_client_encoder_reproduces_the_published_chunk_signatures() -> None:
    # The test-side encoder follows AWS's text; these are AWS's numbers.
    for seed, expected, trailer in [
        (STREAMING_SEED, STREAMING_CHUNKS, None),
        (TRAILER_SEED, TRAILER_CHUNKS, ("x-amz-checksum-crc32c", "sOO8/Q==")),
    ]:
        encoder = ChunkEncoder(example_signing_key(), "20130524T000000Z", SCOPE, seed)
        body = encoder.body([b"a" * 65536, b"a" * 1024], trailer)
        for signature in expected:
            assert f"chunk-signature={signature}".encode() in body
        if trailer:
            assert f"x-amz-trailer-signature:{TRAILER_SIGNATURE}".encode() in body
            assert len(body) == 66946


@pytest.mark.parametrize("trailer", [False, True], ids=["chunks", "chunks+trailer"])
@pytest.mark.parametrize("piece", [1, 7, 8192, 70000])
async def test_published_streaming_upload_decodes(trailer: bool, piece: int) -> None:
    request = _streaming_request(trailer)
    auth = sigv4.verify(request, lookup, region="us-east-1", now=WHEN)
    assert auth is not None
    assert auth.signature == (TRAILER_SEED if trailer else STREAMING_SEED)
    encoder = ChunkEncoder(example_signing_key(), "20130524T000000Z", SCOPE, auth.signature)
    body = encoder.body(
        [b"a" * 65536, b"a" * 1024], ("x-amz-checksum-crc32c", "sOO8/Q==") if trailer else None
    )
    if not trailer:
        assert len(body) == 66824  # the published Content-Length
    decoded = await collect(
        chunked.decode(
            pieces(body, piece),
            decoded_length=66560,
            signer=chunked.ChunkSigner.from_auth(auth),
            trailer="crc32c" if trailer else None,
        )
    )
    assert decoded == b"a" * 66560


def test_trailer_signature_matches_aws_crt_vector() -> None:
    # aws-crt's own chunk-signer test: three trailing headers after the published chunks.
    signer = chunked.ChunkSigner(example_signing_key(), "20130524T000000Z", SCOPE, STREAMING_SEED)
    signature = signer.trailer_signature(
        STREAMING_CHUNKS[2], [("third", "3rd"), ("first", "1st"), ("second", "2nd")]
    )
    assert signature == "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"


def test_a_path_sent_bare_but_signed_encoded_verifies() -> None:
    # The PUT example signs /test%24file.text; a client may put the '$' bare on the wire.
    bare = SignedRequest("PUT", "/test$file.text", "", PUT_OBJECT.headers)
    assert sigv4.verify(bare, lookup, region="us-east-1", now=WHEN) is not None
    # Another key, however it is encoded, is not the signed one.
    other = SignedRequest("PUT", "/test%25file.text", "", PUT_OBJECT.headers)
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(other, lookup, region="us-east-1", now=WHEN)


def test_a_path_that_is_not_utf8_is_only_compared_as_sent() -> None:
    request = SignedRequest("GET", "/test%FF.txt", "", GET_OBJECT.headers)
    with pytest.raises(SignatureDoesNotMatch):
        sigv4.verify(request, lookup, region="us-east-1", now=WHEN)
