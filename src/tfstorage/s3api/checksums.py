"""Content-MD5, x-amz-content-sha256 and x-amz-checksum-* verified as the body streams.

Values are what S3 clients send: base64 of the big-endian digest (hex for
x-amz-content-sha256). The CRCs come from awscrt, the library botocore itself uses
for them, so a client and this server cannot disagree on a polynomial or a byte order.
A mismatch is raised when the stream ends, before the consumer can make the object
visible; the consumer never sees a clean end of a body that did not check out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from awscrt import checksums as crt

from tfstorage.errors import BadDigest, InvalidDigest, InvalidRequest, StorageError
from tfstorage.s3api.errors import XAmzContentSHA256Mismatch


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A running CRC in awscrt's incremental form, digested big-endian as S3 sends it."""

    def __init__(self, function: Callable[[bytes, int], int], width: int) -> None:
        self._function = function
        self._width = width
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")


_FACTORIES: dict[str, Callable[[], Hasher]] = {
    "crc32": lambda: _Crc(crt.crc32, 4),
    "crc32c": lambda: _Crc(crt.crc32c, 4),
    "crc64nvme": lambda: _Crc(crt.crc64nvme, 8),
    "sha1": lambda: hashlib.sha1(usedforsecurity=False),
    "sha256": hashlib.sha256,
    "md5": lambda: hashlib.md5(usedforsecurity=False),
}
_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32, "md5": 16}
ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
"""The x-amz-checksum-* algorithms S3 accepts."""

CHECKSUM_HEADER_PREFIX = "x-amz-checksum-"


def new_hasher(algorithm: str) -> Hasher:
    return _FACTORIES[algorithm]()


def compute(algorithm: str, data: bytes) -> str:
    """The base64 value a client would send for `data`."""
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return base64.b64encode(hasher.digest()).decode()


@dataclass(frozen=True)
class Expected:
    """A digest the client promised: `header` names it in errors."""

    algorithm: str
    digest: bytes
    header: str


def parse_checksum(algorithm: str, value: str, *, header: str) -> Expected:
    """A base64 digest of the right size for its algorithm, or `InvalidDigest`."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _DIGEST_SIZES[algorithm]:
        raise InvalidDigest(f"{header} is not the base64 of a {algorithm} digest")
    return Expected(algorithm, raw, header)


def algorithm_of(header_name: str) -> str | None:
    """`x-amz-checksum-crc32` -> `crc32`; None for any other header name."""
    name = header_name.lower()
    if not name.startswith(CHECKSUM_HEADER_PREFIX):
        return None
    algorithm = name.removeprefix(CHECKSUM_HEADER_PREFIX)
    return algorithm if algorithm in ALGORITHMS else None


def expected_from_headers(headers: Mapping[str, str]) -> list[Expected]:
    """The digests promised in headers (names lowercase): Content-MD5 and one x-amz-checksum-*.

    `x-amz-checksum-algorithm` alone (the value comes in a trailer) promises nothing here.
    """
    expected = []
    if "content-md5" in headers:
        expected.append(parse_checksum("md5", headers["content-md5"], header="Content-MD5"))
    sent = [(n, algorithm_of(n)) for n in headers if n.startswith(CHECKSUM_HEADER_PREFIX)]
    checksums = [(n, a) for n, a in sent if n != "x-amz-checksum-type" and a is not None]
    unknown = [n for n, a in sent if a is None and n not in _NOT_CHECKSUMS]
    if unknown:
        raise InvalidRequest(f"{unknown[0]} is not a checksum algorithm S3 supports")
    if len(checksums) > 1:
        raise InvalidRequest("Expecting a single x-amz-checksum- header")
    for name, algorithm in checksums:
        expected.append(parse_checksum(algorithm, headers[name], header=name))
    return expected


_NOT_CHECKSUMS = {"x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode"}


class ChecksumVerifier:
    """Hashes a stream for every promised digest; `verify()` once the stream is whole.

    `trailer` is checked too when it is given: a digest that arrives after the body.
    """

    def __init__(self, expected: list[Expected], *, trailer_algorithm: str | None = None) -> None:
        self._expected = list(expected)
        algorithms = {e.algorithm for e in expected}
        if trailer_algorithm is not None:
            algorithms.add(trailer_algorithm)
        self._hashers = {a: new_hasher(a) for a in sorted(algorithms)}

    def update(self, data: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)

    def digest(self, algorithm: str) -> bytes:
        return self._hashers[algorithm].digest()

    def verify(self, trailer: Expected | None = None) -> None:
        for expected in [*self._expected, *([trailer] if trailer else [])]:
            if self._hashers[expected.algorithm].digest() != expected.digest:
                raise _mismatch(expected)


def _mismatch(expected: Expected) -> StorageError:
    if expected.algorithm == "md5":
        return BadDigest("The Content-MD5 you specified did not match what we received.")
    return BadDigest(
        f"The {expected.algorithm.upper()} you specified in {expected.header} did not match "
        "what we received."
    )


async def verify_stream(
    source: AsyncIterator[bytes], verifier: ChecksumVerifier
) -> AsyncIterator[bytes]:
    """Pass `source` through, raising `BadDigest` at its end if a digest disagrees."""
    async for piece in source:
        verifier.update(piece)
        yield piece
    verifier.verify()


class VerifiedBody:
    """The object's bytes, checked at their end against what the request promised: the
    signed payload hash (`x-amz-content-sha256`) first, as S3 does, then Content-MD5 and
    x-amz-checksum-*. It is the write path's `DeferredChecks` (service/hashing.py): a
    consumer that computes MD5 and SHA-256 of every byte anyway runs the checks with
    those, and the body then hashes only for the digests they are not (a CRC, SHA-1)."""

    _CONSUMERS = frozenset({"md5", "sha256"})  # the digests a deferring consumer hands back

    def __init__(
        self, source: AsyncIterator[bytes], *, signed_sha256: str | None, expected: list[Expected]
    ) -> None:
        self._source = source
        self._signed = signed_sha256
        self._expected = expected
        self._deferred = False
        self._hashers: dict[str, Hasher] | None = None  # set once the body is read
        self._ended = False

    def defer_checks(self) -> None:
        if self._hashers is not None:
            raise RuntimeError("the checks of a body must be deferred before it is read")
        self._deferred = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._hashers is not None:  # a second pass would check only what is left
            raise RuntimeError("a request body is read once")
        self._hashers = {}
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        needed = {e.algorithm for e in self._expected}
        if self._signed is not None:
            needed.add("sha256")
        if self._deferred:
            needed -= self._CONSUMERS
        self._hashers = {algorithm: new_hasher(algorithm) for algorithm in sorted(needed)}
        updates = [hasher.update for hasher in self._hashers.values()]
        async for piece in self._source:
            for update in updates:
                update(piece)
            yield piece
        self._ended = True
        if not self._deferred:
            self._verify({})

    def check(self, md5: bytes, sha256: bytes) -> None:
        """The deferred checks, with the consumer's digests of the whole body."""
        if not (self._deferred and self._ended):
            raise RuntimeError("check() is for a consumer that deferred the checks, at the end")
        self._verify({"md5": md5, "sha256": sha256})

    def _verify(self, handed: dict[str, bytes]) -> None:
        assert self._hashers is not None
        digests = {algorithm: hasher.digest() for algorithm, hasher in self._hashers.items()}
        digests |= handed
        if self._signed is not None and digests["sha256"].hex() != self._signed:
            raise XAmzContentSHA256Mismatch()
        for expected in self._expected:
            if digests[expected.algorithm] != expected.digest:
                raise _mismatch(expected)
