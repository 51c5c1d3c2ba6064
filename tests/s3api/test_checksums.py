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


def _verified(
    data: bytes, signed_for: bytes, md5_for: bytes | None = None, crc32_for: bytes | None = None
) -> checksums.VerifiedBody:
    expected = []
    if md5_for is not None:
        value = base64.b64encode(hashlib.md5(md5_for).digest()).decode()
        expected.append(checksums.parse_checksum("md5", value, header="Content-MD5"))
    if crc32_for is not None:
        value = _botocore("crc32", crc32_for)
        expected.append(checksums.parse_checksum("crc32", value, header="x-amz-checksum-crc32"))
    signed = hashlib.sha256(signed_for).hexdigest()
    return checksums.VerifiedBody(pieces(data, 2), signed_sha256=signed, expected=expected)


async def test_a_signed_payload_checks_itself() -> None:
    data = b"payload"
    assert await collect(_verified(data, data, md5_for=data)) == data
    with pytest.raises(XAmzContentSHA256Mismatch) as caught:
        await collect(_verified(data + b"x", data))
    assert caught.value.status == 400
    with pytest.raises(BadDigest):
        await collect(_verified(data + b"x", data + b"x", md5_for=data))
    # Both promises broken: the payload hash is reported, as S3 does.
    with pytest.raises(XAmzContentSHA256Mismatch):
        await collect(_verified(data + b"x", data, md5_for=data))


async def test_deferred_checks_use_the_consumers_digests() -> None:
    data, other = b"payload", b"another payload"
    body = _verified(data, data, md5_for=data)
    body.defer_checks()
    assert await collect(body) == data  # no check at the end: the consumer has them
    body.check(hashlib.md5(data).digest(), hashlib.sha256(data).digest())
    for md5, sha256, error in [
        (data, other, XAmzContentSHA256Mismatch),
        (other, data, BadDigest),
        (other, other, XAmzContentSHA256Mismatch),
    ]:
        with pytest.raises(error):
            body.check(hashlib.md5(md5).digest(), hashlib.sha256(sha256).digest())
    # What the body checks is the consumer's word, not bytes it hashed itself.
    fooled = _verified(other, data, md5_for=data)
    fooled.defer_checks()
    assert await collect(fooled) == other
    fooled.check(hashlib.md5(data).digest(), hashlib.sha256(data).digest())


async def test_a_deferring_body_does_not_hash_what_its_consumer_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []
    real = checksums.new_hasher

    def counting(algorithm: str) -> checksums.Hasher:
        made.append(algorithm)
        return real(algorithm)

    monkeypatch.setattr(checksums, "new_hasher", counting)
    data = b"payload"
    # A CRC promised too: the consumer computes none, so the body does.
    body = _verified(data, data, md5_for=data, crc32_for=data)
    await collect(body)
    assert sorted(made) == ["crc32", "md5", "sha256"]
    made.clear()
    body = _verified(data, data, md5_for=data, crc32_for=data)
    body.defer_checks()
    await collect(body)
    assert made == ["crc32"]  # MD5 and SHA-256 come from the consumer
    body.check(hashlib.md5(data).digest(), hashlib.sha256(data).digest())


async def test_a_body_is_read_once() -> None:
    body = _verified(b"abc", b"abc")
    await collect(body)
    with pytest.raises(RuntimeError):
        aiter(body)


async def test_checks_are_deferred_before_the_first_byte_or_not_at_all() -> None:
    body = _verified(b"abc", b"abc")
    stream = aiter(body)
    await anext(stream)
    with pytest.raises(RuntimeError):
        body.defer_checks()
    with pytest.raises(RuntimeError):  # it did not defer: it checks itself
        body.check(hashlib.md5(b"abc").digest(), hashlib.sha256(b"abc").digest())
