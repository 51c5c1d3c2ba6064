"""Checksums agree with botocore's own (what boto3 puts in headers and trailers)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore import httpchecksum
from hypothesis import given, settings
from hypothesis import strategies as st

from tfstorage.errors import BadDigest, InvalidDigest, InvalidRequest
from tfstorage.s3api import checksums
from tfstorage.s3api.errors import XAmzContentSHA256Mismatch

from .clients import collect, pieces

pytestmark = pytest.mark.anyio

BOTOCORE = {
    "crc32": httpchecksum.CrtCrc32Checksum,
    "crc32c": httpchecksum.CrtCrc32cChecksum,
    "crc64nvme": httpchecksum.CrtCrc64NvmeChecksum,
    "sha1": httpchecksum.Sha1Checksum,
    "sha256": httpchecksum.Sha256Checksum,
}


def _botocore(algorithm: str, data: bytes) -> str:
    checksum = BOTOCORE[algorithm]()
    checksum.update(data)
    return str(checksum.b64digest())


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), split=st.integers(min_value=1, max_value=700))
def test_every_algorithm_matches_botocore_however_the_data_is_split(
    data: bytes, split: int
) -> None:
    for algorithm in checksums.ALGORITHMS:
        hasher = checksums.new_hasher(algorithm)
        for start in range(0, len(data), split):
            hasher.update(data[start : start + split])
        assert base64.b64encode(hasher.digest()).decode() == _botocore(algorithm, data)


def test_known_values() -> None:
    # Published check values of each CRC over "123456789" (CRC catalogue / NVMe spec).
    check = b"123456789"
    assert checksums.new_hasher("crc32").digest() == b"\0\0\0\0"
    for algorithm, value in [
        ("crc32", 0xCBF43926),
        ("crc32c", 0xE3069283),
        ("crc64nvme", 0xAE8B14860A799888),
    ]:
        hasher = checksums.new_hasher(algorithm)
        hasher.update(check)
        assert int.from_bytes(hasher.digest(), "big") == value
    assert checksums.compute("crc32c", b"a" * 66560) == "sOO8/Q=="  # AWS's trailer example


def test_parse_checksum_rejects_wrong_sizes_and_bad_base64() -> None:
    assert checksums.parse_checksum("crc32", "sOO8/Q==", header="h").digest == base64.b64decode(
        "sOO8/Q=="
    )
    for algorithm, value in [
        ("crc32", "AAAAAAAA"),
        ("crc64nvme", "sOO8/Q=="),
        ("sha256", "not base64"),
        ("sha1", ""),
        ("md5", "1B2M2Y8AsgTpgAmY7PhCfg"),  # unpadded
    ]:
        with pytest.raises(InvalidDigest):
            checksums.parse_checksum(algorithm, value, header="h")


def test_expected_from_headers() -> None:
    md5 = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    sha = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    found = checksums.expected_from_headers(
        {"content-md5": md5, "x-amz-checksum-sha256": sha, "x-amz-checksum-algorithm": "SHA256"}
    )
    assert [e.algorithm for e in found] == ["md5", "sha256"]
    assert checksums.expected_from_headers({"x-amz-checksum-type": "FULL_OBJECT"}) == []
    with pytest.raises(InvalidRequest, match="single"):
        checksums.expected_from_headers(
            {"x-amz-checksum-sha256": sha, "x-amz-checksum-crc32": "AAAAAA=="}
        )
    with pytest.raises(InvalidRequest, match="x-amz-checksum-md5"):
        checksums.expected_from_headers({"x-amz-checksum-md5": md5})
    with pytest.raises(InvalidDigest):
        checksums.expected_from_headers({"content-md5": "short"})


@pytest.mark.parametrize("algorithm", ["md5", *checksums.ALGORITHMS])
async def test_verify_stream_passes_good_data_and_refuses_bad_at_the_end(algorithm: str) -> None:
    data = b"weights" * 1000
    value = base64.b64encode(
        hashlib.md5(data).digest()
        if algorithm == "md5"
        else base64.b64decode(_botocore(algorithm, data))
    ).decode()
    expected = [checksums.parse_checksum(algorithm, value, header="h")]
    assert (
        await collect(
            checksums.verify_stream(pieces(data, 333), checksums.ChecksumVerifier(expected))
        )
        == data
    )
    received: list[bytes] = []
    with pytest.raises(BadDigest):
        async for piece in checksums.verify_stream(
            pieces(data + b"!", 333), checksums.ChecksumVerifier(expected)
        ):
            received.append(piece)
    assert b"".join(received) == data + b"!"  # the error comes before a clean end


async def test_content_sha256_mismatch() -> None:
    data = b"payload"
    good = hashlib.sha256(data).hexdigest()
    assert await collect(checksums.verify_content_sha256(pieces(data, 2), good)) == data
    with pytest.raises(XAmzContentSHA256Mismatch) as caught:
        await collect(checksums.verify_content_sha256(pieces(data + b"x", 2), good))
    assert caught.value.status == 400
