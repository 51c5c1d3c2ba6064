"""The one place that picks how a request body is read, from what its signature promised.

The readers stack like versitygw's: the raw body, then the aws-chunked decoder with its
chunk signatures and trailer if the payload is streamed, then the signed payload hash
and the checksums the headers promised (`checksums.VerifiedBody`, whose MD5 and
SHA-256 checks the write path runs with the digests it computes anyway). Whatever the
stack, the consumer gets plain object bytes, in a stream that ends cleanly only if every
promise held: the body's own, or, where the write path took the checks over, the write
path's stream over it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Mapping

from tfstorage.errors import InvalidArgument, LengthRequired
from tfstorage.s3api import checksums, chunked, sigv4
from tfstorage.s3api.errors import UnsupportedAuthorization


def object_body(
    source: AsyncIterator[bytes],
    headers: Mapping[str, str],
    auth: sigv4.Authenticated | None,
    *,
    max_chunk_size: int = chunked.DEFAULT_MAX_CHUNK_SIZE,
) -> AsyncIterable[bytes]:
    """The object's bytes, verified as they stream; `headers` keyed in lowercase.

    Raises at once (before any byte is read) for headers that are wrong on their face.
    """
    mode = auth.content_sha256 if auth else headers.get("x-amz-content-sha256", "")
    if auth is None and mode.startswith("STREAMING-AWS4"):
        raise UnsupportedAuthorization("a signed streaming body needs a signed request")
    stream = source
    if mode.startswith("STREAMING-"):
        decoded = headers.get("x-amz-decoded-content-length")
        if decoded is None:
            raise LengthRequired("x-amz-decoded-content-length is required for aws-chunked")
        if not decoded.isascii() or not decoded.isdigit() or len(decoded) > 19:
            raise InvalidArgument("x-amz-decoded-content-length must be a whole number")
        signed = mode in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
        with_trailer = mode.endswith("-TRAILER")
        stream = chunked.decode(
            source,
            decoded_length=int(decoded),
            signer=chunked.ChunkSigner.from_auth(auth) if signed and auth else None,
            trailer=chunked.trailer_algorithm(headers.get("x-amz-trailer"))
            if with_trailer
            else None,
            max_chunk_size=max_chunk_size,
        )
    payload_hash = mode if auth is not None and len(mode) == 64 else None  # a signed payload
    expected = checksums.expected_from_headers(headers)
    if payload_hash is None and not expected:
        return stream
    return checksums.VerifiedBody(stream, signed_sha256=payload_hash, expected=expected)
