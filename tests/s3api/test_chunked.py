"""aws-chunked decoding: boto3's real trailer bodies, AWS's signed example, and tampering."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncIterator

import anyio
import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from tfstorage.errors import BadDigest, IncompleteBody, InvalidDigest, InvalidRequest
from tfstorage.s3api import chunked, sigv4
from tfstorage.s3api.errors import (
    ChunkFramingError,
    MalformedTrailerError,
    SignatureDoesNotMatch,
)

from .clients import ChunkEncoder, boto3_request, collect, example_signing_key, lookup, pieces
from .test_aws_examples import SCOPE, STREAMING_SEED, TRAILER_SEED, WHEN, _streaming_request

pytestmark = pytest.mark.anyio

DATA = bytes(range(256)) * 300  # 76800 bytes, every byte value


def _unsigned(body: bytes, piece: int = 4096, **kwargs: object) -> AsyncIterator[bytes]:
    options: dict[str, object] = {"decoded_length": len(DATA), "signer": None, "trailer": "crc32"}
    options.update(kwargs)
    return chunked.decode(pieces(body, piece), **options)  # type: ignore[arg-type]


# --- STREAMING-UNSIGNED-PAYLOAD-TRAILER, as boto3 sends it -----------------------------
@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
async def test_boto3_unsigned_trailer_bodies_decode(algorithm: str) -> None:
    sent = boto3_request("put_object", Bucket="b", Key="k", Body=DATA, ChecksumAlgorithm=algorithm)
    auth = sigv4.verify(sent.signed(), lookup, region="us-east-1")
    assert auth is not None and auth.content_sha256 == sigv4.STREAMING_UNSIGNED_TRAILER
    headers = sent.lower_headers()
    trailer = chunked.trailer_algorithm(headers["x-amz-trailer"])
    assert trailer == algorithm.lower()
    decoded_length = int(headers["x-amz-decoded-content-length"])
    for piece in (1, 1000, 1 << 20):
        stream = chunked.decode(
            pieces(sent.body, piece), decoded_length=decoded_length, signer=None, trailer=trailer
        )
        assert await collect(stream) == DATA


def _boto3_body() -> bytes:
    return boto3_request("put_object", Bucket="b", Key="k", Body=DATA).body


async def test_a_changed_byte_fails_the_trailing_checksum() -> None:
    body = bytearray(_boto3_body())
    body[body.index(b"\r\n") + 100] ^= 1
    with pytest.raises(BadDigest, match="CRC32"):
        await collect(_unsigned(bytes(body)))


async def test_a_changed_trailer_value_fails() -> None:
    body = _boto3_body()
    name, _, value = body.rstrip(b"\r\n").rpartition(b"\r\n")[2].partition(b":")
    other = b"AAAAAA==" if value != b"AAAAAA==" else b"AAAAAQ=="
    with pytest.raises(BadDigest):
        await collect(_unsigned(body.replace(b":" + value, b":" + other)))
    with pytest.raises(InvalidDigest):
        await collect(_unsigned(body.replace(b":" + value, b":not base64!")))
    assert name == b"x-amz-checksum-crc32"


@pytest.mark.parametrize(
    ("ending", "error"),
    [
        (b"0\r\n\r\n", MalformedTrailerError),  # announced, never sent
        (b"0\r\nx-amz-checksum-sha256:AAAA\r\n\r\n", MalformedTrailerError),  # another one
        (b"0\r\nno colon here\r\n\r\n", MalformedTrailerError),
        (b"0\r\n", MalformedTrailerError),
    ],
)
async def test_bad_trailers(ending: bytes, error: type[Exception]) -> None:
    body = _boto3_body()
    head = body[: body.rindex(b"0\r\nx-amz-checksum")]
    with pytest.raises(error):
        await collect(_unsigned(head + ending))


async def test_trailer_lines_may_end_in_bare_lf() -> None:
    body = _boto3_body().replace(b"\r\n\r\n", b"\n\n")
    assert await collect(_unsigned(body)) == DATA


async def test_decoded_length_is_enforced_both_ways() -> None:
    body = _boto3_body()
    with pytest.raises(InvalidRequest, match="more than"):
        await collect(_unsigned(body, decoded_length=len(DATA) - 1))
    with pytest.raises(IncompleteBody):
        await collect(_unsigned(body, decoded_length=len(DATA) + 1))


async def test_a_truncated_body_is_incomplete() -> None:
    body = _boto3_body()
    for cut in (3, len(body) // 2, len(body) - 40):
        with pytest.raises((IncompleteBody, MalformedTrailerError)):
            await collect(_unsigned(body[:cut]))


async def test_unsigned_chunks_stream_without_gathering_a_chunk() -> None:
    body = _boto3_body()  # one chunk of 76800 bytes
    sizes = [len(p) async for p in _unsigned(body, piece=1024)]
    assert sum(sizes) == len(DATA) and max(sizes) <= 1024


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\ndata\r\n0\r\n\r\n",
        b"4;chunk-signature=" + b"0" * 64 + b"\r\ndata\r\n0\r\n\r\n",
        b"4\r\ndataXX0\r\n\r\n",
        b"-4\r\ndata\r\n0\r\n\r\n",
        b"\r\n",
    ],
)
async def test_framing_errors(body: bytes) -> None:
    with pytest.raises(IncompleteBody):
        await collect(chunked.decode(pieces(body, 3), decoded_length=4, signer=None, trailer=None))


async def _endless(piece: bytes, pulled: list[int]) -> AsyncIterator[bytes]:
    while True:
        pulled.append(len(piece))
        yield piece


async def test_an_endless_chunk_line_is_cut_off() -> None:
    pulled: list[int] = []
    with pytest.raises(ChunkFramingError, match="too long"):
        await collect(
            chunked.decode(
                _endless(b"1" * 1000, pulled), decoded_length=9, signer=None, trailer=None
            )
        )
    assert sum(pulled) <= chunked.MAX_CHUNK_LINE + 1000


async def test_an_endless_trailer_section_is_cut_off() -> None:
    pulled: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"0\r\n"
        async for piece in _endless(b"x-amz-checksum-crc32:" * 50, pulled):
            yield piece

    with pytest.raises(MalformedTrailerError, match="too long"):
        await collect(chunked.decode(body(), decoded_length=0, signer=None, trailer="crc32"))
    assert sum(pulled) <= chunked.MAX_TRAILER_SECTION + 2000


def test_x_amz_trailer_must_name_a_checksum() -> None:
    assert chunked.trailer_algorithm(None) is None
    assert chunked.trailer_algorithm("x-amz-checksum-crc64nvme") == "crc64nvme"
    for bad in ("x-amz-meta-foo", "x-amz-checksum-md5", "x-amz-checksum-crc32,x-amz-checksum-sha1"):
        with pytest.raises(InvalidRequest):
            chunked.trailer_algorithm(bad)


# --- STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER): AWS's published example, tampered ---
def _signer(trailer: bool) -> chunked.ChunkSigner:
    auth = sigv4.verify(_streaming_request(trailer), lookup, region="us-east-1", now=WHEN)
    assert auth is not None
    return chunked.ChunkSigner.from_auth(auth)


def _encoder(trailer: bool) -> ChunkEncoder:
    seed = TRAILER_SEED if trailer else STREAMING_SEED
    return ChunkEncoder(example_signing_key(), "20130524T000000Z", SCOPE, seed)


CHUNKS = [b"a" * 65536, b"a" * 1024]
CRC32C = ("x-amz-checksum-crc32c", "sOO8/Q==")


async def _decode_signed(
    body: bytes, trailer: bool, received: list[bytes], **kwargs: object
) -> None:
    options: dict[str, object] = {
        "decoded_length": 66560,
        "signer": _signer(trailer),
        "trailer": "crc32c" if trailer else None,
    }
    options.update(kwargs)
    async for piece in chunked.decode(pieces(body, 5000), **options):  # type: ignore[arg-type]
        received.append(piece)


async def test_signed_chunks_are_passed_on_whole_and_only_once_verified() -> None:
    received: list[bytes] = []
    await _decode_signed(_encoder(False).body(CHUNKS), False, received)
    assert [len(p) for p in received] == [65536, 1024]


@pytest.mark.parametrize("chunk", [0, 1])
async def test_a_changed_data_byte_stops_before_its_chunk_is_passed_on(chunk: int) -> None:
    body = bytearray(_encoder(False).body(CHUNKS))
    offset = 90 if chunk == 0 else 65626 + 88
    body[offset] = ord("b")
    received: list[bytes] = []
    with pytest.raises(SignatureDoesNotMatch):
        await _decode_signed(bytes(body), False, received)
    assert [len(p) for p in received] == [65536] * chunk


async def test_every_byte_of_every_chunk_signature_matters() -> None:
    body = _encoder(False).body(CHUNKS)
    starts = [
        i + len(b"chunk-signature=")
        for i in range(len(body))
        if body.startswith(b"chunk-signature=", i)
    ]
    assert len(starts) == 3
    for start in starts:
        for position in range(start, start + 64):
            changed = bytearray(body)
            changed[position] = ord("0") if body[position] != ord("0") else ord("1")
            with pytest.raises(SignatureDoesNotMatch):
                await _decode_signed(bytes(changed), False, [])


async def test_reordered_or_missing_chunks_are_refused() -> None:
    first, second = b"a" * 65536, b"b" * 1024
    encoder = _encoder(False)
    one, two, last = encoder.chunk(first), encoder.chunk(second), encoder.chunk(b"")
    with pytest.raises(SignatureDoesNotMatch):
        await _decode_signed(two + one + last + b"\r\n", False, [])
    with pytest.raises(IncompleteBody):
        await _decode_signed(one + two, False, [])
    with pytest.raises(SignatureDoesNotMatch):
        await _decode_signed(one + last + b"\r\n", False, [], decoded_length=65536)


async def test_signed_decoded_length_is_enforced_before_reading_the_chunk() -> None:
    received: list[bytes] = []
    with pytest.raises(InvalidRequest, match="more than"):
        await _decode_signed(_encoder(False).body(CHUNKS), False, received, decoded_length=66559)
    assert [len(p) for p in received] == [65536]
    with pytest.raises(IncompleteBody):
        await _decode_signed(_encoder(False).body(CHUNKS), False, [], decoded_length=66561)


async def test_a_chunk_over_the_cap_is_refused_before_it_is_buffered() -> None:
    body = _encoder(False).body(CHUNKS)
    pulled: list[int] = []

    async def counted() -> AsyncIterator[bytes]:
        async for piece in pieces(body, 100):
            pulled.append(len(piece))
            yield piece

    with pytest.raises(ChunkFramingError, match="limit"):
        await collect(
            chunked.decode(
                counted(),
                decoded_length=66560,
                signer=_signer(False),
                trailer=None,
                max_chunk_size=65535,
            )
        )
    assert sum(pulled) <= 100


async def test_signed_trailer_verified() -> None:
    received: list[bytes] = []
    await _decode_signed(_encoder(True).body(CHUNKS, CRC32C), True, received)
    assert b"".join(received) == b"a" * 66560


async def test_signed_trailer_tampering() -> None:
    body = _encoder(True).body(CHUNKS, CRC32C)
    # The value changed without re-signing: the trailer signature catches it.
    with pytest.raises(SignatureDoesNotMatch):
        await _decode_signed(body.replace(b"sOO8/Q==", b"sOO8/Q=="[::-1]), True, [])
    # The signature changed.
    at = body.index(b"x-amz-trailer-signature:") + 30
    changed = body[:at] + (b"0" if body[at : at + 1] != b"0" else b"1") + body[at + 1 :]
    with pytest.raises(SignatureDoesNotMatch):
        await _decode_signed(changed, True, [])
    # Correctly signed, but a wrong checksum: the data is checked, not just the signature.
    wrong = _encoder(True).body(CHUNKS, ("x-amz-checksum-crc32c", "AAAAAA=="))
    with pytest.raises(BadDigest):
        await _decode_signed(wrong, True, [])
    # No trailer signature at all.
    unsigned = body[: body.index(b"x-amz-trailer-signature:")] + b"\r\n"
    with pytest.raises(MalformedTrailerError):
        await _decode_signed(unsigned, True, [])


async def test_data_after_the_last_chunk_without_trailer_is_refused() -> None:
    body = _encoder(False).body(CHUNKS) + b"x-amz-checksum-crc32c:sOO8/Q==\r\n\r\n"
    with pytest.raises(MalformedTrailerError):
        await _decode_signed(body, False, [])


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=66900), max_size=30), trailer=st.booleans())
def test_any_split_of_a_signed_body_decodes(cuts: list[int], trailer: bool) -> None:
    body = _encoder(trailer).body(CHUNKS, CRC32C if trailer else None)
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})

    async def split() -> AsyncIterator[bytes]:
        for start, end in itertools.pairwise(bounds):
            yield body[start:end]

    async def run() -> bytes:
        stream = chunked.decode(
            split(),
            decoded_length=66560,
            signer=_signer(trailer),
            trailer="crc32c" if trailer else None,
        )
        return await collect(stream)

    assert anyio.run(run) == b"a" * 66560


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=3000),
    chunk_size=st.integers(min_value=1, max_value=1200),
    piece=st.integers(min_value=1, max_value=500),
    algorithm=st.sampled_from(["crc32", "crc32c", "crc64nvme", "sha1", "sha256"]),
)
def test_botocore_aws_chunked_wrapper_round_trips(
    data: bytes, chunk_size: int, piece: int, algorithm: str
) -> None:
    # botocore's own encoder (what put_object uses), at any chunk size and any split.
    wrapper = httpchecksum.AwsChunkedWrapper(
        io.BytesIO(data),
        checksum_cls=httpchecksum._CHECKSUM_CLS[algorithm],
        checksum_name=f"x-amz-checksum-{algorithm}",
        chunk_size=chunk_size,
    )
    body = wrapper.read()

    async def run() -> bytes:
        stream = chunked.decode(
            pieces(body, piece), decoded_length=len(data), signer=None, trailer=algorithm
        )
        return await collect(stream)

    assert anyio.run(run) == data
