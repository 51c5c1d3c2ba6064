"""aws-chunked request bodies, decoded (and their signatures checked) as they stream.

Three framings share one decoder:

- `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: `<hex>;chunk-signature=<sig>\\r\\n<data>\\r\\n`,
  each signature chained from the previous one (the request's signature seeds it).
  A chunk is held whole until its signature checks out and only then passed on, so
  no unauthenticated byte ever reaches the consumer: memory is one chunk, capped.
- `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: the same, then trailing headers
  (an `x-amz-checksum-*`) signed by `x-amz-trailer-signature`.
- `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: `<hex>\\r\\n<data>\\r\\n`, streamed piece by
  piece (nothing to verify before the trailer's checksum), then the trailer.

`x-amz-decoded-content-length` is enforced both ways: a chunk that would pass it is
refused before it is read, and a body that ends short is refused at its last chunk.
The trailing checksum is verified before the decoder's iterator ends: a consumer that
makes the object visible only on a clean end can never publish unverified bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tfstorage.errors import IncompleteBody, InvalidRequest
from tfstorage.s3api import checksums
from tfstorage.s3api.canonical import signatures_match
from tfstorage.s3api.errors import ChunkFramingError, MalformedTrailerError, SignatureDoesNotMatch
from tfstorage.s3api.sigv4 import EMPTY_SHA256, Authenticated

DEFAULT_MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_CHUNK_LINE = 4096  # "<hex>;chunk-signature=<64 hex>" is ~90 bytes
MAX_TRAILER_SECTION = 4096
_SIGNED_LINE = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([0-9a-f]{64})")
_UNSIGNED_LINE = re.compile(rb"([0-9a-fA-F]{1,16})")
TRAILER_SIGNATURE = "x-amz-trailer-signature"


@dataclass(frozen=True)
class ChunkSigner:
    """The chain of signatures an authenticated streaming upload must follow."""

    key: bytes
    amz_date: str
    scope: str
    seed: str

    @classmethod
    def from_auth(cls, auth: Authenticated) -> ChunkSigner:
        return cls(auth.signing_key, auth.amz_date, auth.scope, auth.signature)

    def chunk_signature(self, previous: str, data_sha256: str) -> str:
        text = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{self.amz_date}\n{self.scope}\n"
            f"{previous}\n{EMPTY_SHA256}\n{data_sha256}"
        )
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def trailer_signature(self, previous: str, trailers: list[tuple[str, str]]) -> str:
        canonical = "".join(f"{name}:{value}\n" for name, value in sorted(trailers))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        text = f"AWS4-HMAC-SHA256-TRAILER\n{self.amz_date}\n{self.scope}\n{previous}\n{digest}"
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()


class _Reader:
    """Buffered reads over a byte stream; holds at most what was asked plus one piece."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._buffer = bytearray()
        self._ended = False

    async def _fill(self) -> bool:
        while not self._ended:
            try:
                piece = await anext(self._source)
            except StopAsyncIteration:
                self._ended = True
                return False
            if piece:
                self._buffer += piece
                return True
        return False

    async def line(self, limit: int) -> bytes:
        start = 0
        while (end := self._buffer.find(b"\r\n", start)) < 0:
            if len(self._buffer) > limit:
                raise ChunkFramingError("a chunk header line is too long")
            start = max(0, len(self._buffer) - 1)
            if not await self._fill():
                raise IncompleteBody("the body ended in the middle of a chunk header")
        if end > limit:
            raise ChunkFramingError("a chunk header line is too long")
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    async def exactly(self, size: int) -> bytes:
        if len(self._buffer) >= size:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        # Gather the pieces and join once: growing one buffer would copy a big chunk
        # several times over.
        parts = [bytes(self._buffer)]
        have = len(self._buffer)
        self._buffer.clear()
        while have < size:
            try:
                piece = await anext(self._source)
            except StopAsyncIteration:
                self._ended = True
                raise IncompleteBody("the body ended in the middle of a chunk") from None
            parts.append(piece)
            have += len(piece)
        if have > size:
            extra = have - size
            self._buffer += parts[-1][-extra:]
            parts[-1] = parts[-1][:-extra]
        return b"".join(parts)

    async def pieces(self, size: int) -> AsyncIterator[bytes]:
        """`size` bytes as they arrive, without gathering them first."""
        while size > 0:
            if self._buffer:
                piece = bytes(self._buffer[:size])
                del self._buffer[: len(piece)]
            else:
                # Straight from the source, uncopied, unless it runs past this chunk.
                try:
                    piece = await anext(self._source)
                except StopAsyncIteration:
                    self._ended = True
                    raise IncompleteBody("the body ended in the middle of a chunk") from None
                if len(piece) > size:
                    self._buffer += piece[size:]
                    piece = piece[:size]
            size -= len(piece)
            if piece:
                yield piece

    async def rest(self, limit: int) -> bytes:
        while not self._ended:
            if len(self._buffer) > limit:
                raise MalformedTrailerError("the trailing headers are too long")
            await self._fill()
        if len(self._buffer) > limit:
            raise MalformedTrailerError("the trailing headers are too long")
        return bytes(self._buffer)


def trailer_algorithm(x_amz_trailer: str | None) -> str | None:
    """The checksum algorithm an `x-amz-trailer` header announces (S3 allows one)."""
    if x_amz_trailer is None or not x_amz_trailer.strip():
        return None
    algorithm = checksums.algorithm_of(x_amz_trailer.strip())
    if algorithm is None:
        raise InvalidRequest(f"x-amz-trailer {x_amz_trailer[:64]!r} is not an x-amz-checksum-*")
    return algorithm


async def decode(
    source: AsyncIterator[bytes],
    *,
    decoded_length: int,
    signer: ChunkSigner | None,
    trailer: str | None,
    max_chunk_size: int = DEFAULT_MAX_CHUNK_SIZE,
) -> AsyncIterator[bytes]:
    """The object's bytes out of an aws-chunked body.

    `signer` is None for the unsigned framing; `trailer` is the checksum algorithm
    announced by `x-amz-trailer` (None when the framing carries no trailer).
    """
    reader = _Reader(source)
    verifier = checksums.ChecksumVerifier([], trailer_algorithm=trailer)
    previous = signer.seed if signer else ""
    received = 0
    while True:
        size, signature = _parse_chunk_line(await reader.line(MAX_CHUNK_LINE), signed=signer)
        if size > max_chunk_size:
            raise ChunkFramingError(f"a chunk of {size} bytes is over the {max_chunk_size} limit")
        if received + size > decoded_length:
            raise InvalidRequest(
                f"the chunks carry more than the {decoded_length} bytes of "
                "x-amz-decoded-content-length"
            )
        if signer is not None:
            data = await reader.exactly(size) if size else b""
            if size and await reader.exactly(2) != b"\r\n":
                raise ChunkFramingError("a chunk is not followed by CRLF")
            digest = hashlib.sha256(data).hexdigest() if size else EMPTY_SHA256
            previous = _check(signer.chunk_signature(previous, digest), signature)
            if data:
                verifier.update(data)
                received += size
                yield data
        else:
            async for piece in reader.pieces(size):
                verifier.update(piece)
                received += len(piece)
                yield piece
            if size and await reader.exactly(2) != b"\r\n":
                raise ChunkFramingError("a chunk is not followed by CRLF")
        if size == 0:
            break
    if received != decoded_length:
        raise IncompleteBody(
            f"received {received} bytes but x-amz-decoded-content-length declared {decoded_length}"
        )
    section = await reader.rest(MAX_TRAILER_SECTION)
    _check_trailers(section, signer=signer, previous=previous, trailer=trailer, verifier=verifier)


def _parse_chunk_line(line: bytes, *, signed: ChunkSigner | None) -> tuple[int, str]:
    match = (_SIGNED_LINE if signed else _UNSIGNED_LINE).fullmatch(line)
    if match is None:
        raise ChunkFramingError("a chunk header is not <hex size>[;chunk-signature=<signature>]")
    return int(match.group(1), 16), (match.group(2).decode() if signed else "")


def _check(expected: str, given: str) -> str:
    if not signatures_match(expected, given):
        raise SignatureDoesNotMatch("a chunk signature does not match its data")
    return expected


def _check_trailers(
    section: bytes,
    *,
    signer: ChunkSigner | None,
    previous: str,
    trailer: str | None,
    verifier: checksums.ChecksumVerifier,
) -> None:
    # Lines end in CRLF; a bare LF is accepted as some clients send one.
    lines = [line.rstrip(b"\r") for line in section.split(b"\n")]
    lines = [line for line in lines if line]
    if trailer is None:
        if lines:
            raise MalformedTrailerError("data follows the last chunk of a body without trailers")
        return
    fields: list[tuple[str, str]] = []
    for line in lines:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise MalformedTrailerError("a trailing header is not name:value")
        fields.append((name.strip().lower(), value.strip()))
    wanted = checksums.CHECKSUM_HEADER_PREFIX + trailer
    if signer is not None:
        if not fields or fields[-1][0] != TRAILER_SIGNATURE:
            raise MalformedTrailerError("the trailer signature is missing")
        signed_fields, given = fields[:-1], fields[-1][1]
        _check(signer.trailer_signature(previous, signed_fields), given)
        fields = signed_fields
    if [name for name, _ in fields] != [wanted]:
        raise MalformedTrailerError(f"the trailer must be exactly {wanted} as x-amz-trailer said")
    expected = checksums.parse_checksum(trailer, fields[0][1], header=wanted)
    verifier.verify(expected)
