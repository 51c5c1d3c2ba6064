"""Streaming multipart/form-data parsing in bounded memory, for every front door.

Shared by the REST uploads (api/) and S3 POST Object (s3api/): the two front doors never
import each other, so the parser lives below both.

`request.form()` spools every file to a temporary file before the route sees it; an
upload of many gigabytes must instead flow straight into the blob store. This module
drives python-multipart's push parser with body chunks as they arrive and hands each
part's bytes to the consumer, reading the next body chunk only once the consumer has
taken everything parsed from the previous one. Memory is therefore bounded by one body
chunk plus the parser's state, whatever the size of the upload.

Every failure surfaces as one of our errors: a body that ends before the closing
boundary raises `IncompleteBody` (from the part being read, so a consumer storing it
discards it), a syntax error `MalformedMultipart`, an exceeded limit `RequestTooLarge`.
"""

from __future__ import annotations

import email.message
import email.utils
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from tfstorage.errors import (
    IncompleteBody,
    InvalidRequest,
    MalformedMultipart,
    RequestTooLarge,
    StorageError,
)

__all__ = ["MultipartStream", "Part", "PartHeaders"]

# RFC 2046 §5.1.1 bchars; up to python-multipart's own 256-byte cap, since a few clients
# exceed the RFC's 70.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,255}[0-9A-Za-z'()+_,\-./:=?]")

# Real clients send two or three headers per part; the block size limit is the real
# bound, this only stops a flood of tiny header lines early.
_MAX_HEADER_COUNT = 32

# Bytes a header line costs beyond its name and value (": " and CRLF), so that many
# empty-valued headers still count against the block limit.
_HEADER_LINE_OVERHEAD = 4

_CR = 13


@dataclass(frozen=True)
class PartHeaders:
    """What a part's headers say: its form field name, file name and media type."""

    name: str
    filename: str | None
    content_type: str | None
    # Per-file checksums of a multi-file upload, as on a single upload's request.
    content_md5: str | None = None
    checksum_sha256: str | None = None


class _Marker(Enum):
    PART_END = "part_end"
    END = "end"


_Event: TypeAlias = bytes | PartHeaders | _Marker


class Part:
    """One part of the body; iterate it to receive its bytes as they stream in.

    A part must be read (or skipped by advancing the `MultipartStream`) before the next
    one arrives. Reading a part that the stream has skipped raises `RuntimeError`.
    """

    __slots__ = ("_done", "_skipped", "_stream", "headers")

    def __init__(self, stream: MultipartStream, headers: PartHeaders) -> None:
        self._stream = stream
        self.headers = headers
        self._done = False
        self._skipped = False

    @property
    def name(self) -> str:
        return self.headers.name

    @property
    def filename(self) -> str | None:
        return self.headers.filename

    @property
    def content_type(self) -> str | None:
        return self.headers.content_type

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            if self._skipped:
                raise RuntimeError("this part was skipped; read a part before the next one")
            raise StopAsyncIteration
        event = await self._stream._next_event()
        if isinstance(event, bytes):
            return event
        self._done = True
        if event is not _Marker.PART_END:  # pragma: no cover - the parser always ends parts
            self._stream._events.appendleft(event)
        raise StopAsyncIteration

    async def read_text(self, limit: int) -> str:
        """Read the rest of a small form field as UTF-8 text of at most `limit` bytes."""
        buffer = bytearray()
        async for chunk in self:
            buffer += chunk
            if len(buffer) > limit:
                raise RequestTooLarge(f"form field {self.name!r} is longer than {limit} bytes")
        try:
            return buffer.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"form field {self.name!r} is not valid UTF-8") from None

    async def _skip(self) -> None:
        unread = False
        async for _ in self:
            unread = True
        self._skipped = unread

    def __repr__(self) -> str:
        return f"Part(name={self.name!r}, filename={self.filename!r})"


class MultipartStream:
    """The parts of a multipart/form-data body, parsed as the body streams in.

    `body` is any async iterable of byte chunks (for example `request.stream()`). Limits
    are enforced as bytes arrive, never after buffering: more than `max_parts` parts, a
    part header block over `max_header_size` bytes or a field without a filename over
    `max_field_size` bytes raise `RequestTooLarge`; more than `max_preamble` bytes before
    the first boundary raise `MalformedMultipart`. File parts are not size-limited here.
    """

    def __init__(
        self,
        body: AsyncIterable[bytes],
        content_type_header: str,
        *,
        max_parts: int = 1000,
        max_field_size: int = 64 * 1024,
        max_header_size: int = 16 * 1024,
        max_preamble: int = 64 * 1024,
    ) -> None:
        boundary = _parse_boundary(content_type_header)
        self._body = aiter(body)
        self._max_parts = max_parts
        self._max_field_size = max_field_size
        self._max_header_size = max_header_size
        self._max_preamble = max_preamble

        self._events: deque[_Event] = deque()
        self._current: Part | None = None
        self._error: StorageError | None = None
        self._ended = False  # the parser saw the closing boundary
        self._finished = False  # the consumer saw the end of the stream
        # Until the first boundary is found: how much preamble was skipped, and the last
        # bytes seen, so a delimiter split across chunks is still found.
        self._delimiter = b"\n--" + boundary
        self._preamble: int | None = 0
        self._preamble_tail = b"\n"  # the body is treated as if it began on a new line
        self._parts = 0

        # Per-part parser state, reset at each part_begin.
        self._header_size = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._field_size = 0
        self._field_limited = False

        try:
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._on_part_begin,
                    "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end,
                    "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value,
                    "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished,
                    "on_end": self._on_end,
                },
                max_header_count=_MAX_HEADER_COUNT,
                # Per line; the whole block is bounded in _count_header.
                max_header_size=max_header_size,
            )
        except Exception as exc:
            raise MalformedMultipart("invalid multipart boundary") from exc

    def __aiter__(self) -> AsyncIterator[Part]:
        return self

    async def __anext__(self) -> Part:
        if self._finished:
            raise StopAsyncIteration
        current = self._current
        if current is not None and not current._done:
            await current._skip()
        event = await self._next_event()
        if isinstance(event, PartHeaders):
            self._current = Part(self, event)
            return self._current
        if event is _Marker.END:
            self._finished = True
            raise StopAsyncIteration
        # Unreachable with a well-behaved parser: data or part_end with no part open.
        raise self._fail(MalformedMultipart())  # pragma: no cover

    async def aclose(self) -> None:
        """Stop reading the body and release its iterator."""
        self._finished = True
        await self._close_body()

    # -- pulling events --------------------------------------------------------------

    async def _next_event(self) -> _Event:
        events = self._events
        while not events:
            await self._feed()
        return events.popleft()

    async def _feed(self) -> None:
        # Called only when every event from the previous chunk has been consumed: this is
        # the backpressure that keeps memory at one chunk.
        if self._error is not None:
            raise self._error
        if self._ended:  # pragma: no cover - END is queued before _ended is set
            raise self._fail(MalformedMultipart())
        try:
            chunk = await anext(self._body)
        except StopAsyncIteration:
            raise self._fail(self._error_at_end_of_body()) from None
        except (ClientDisconnect, OSError) as exc:
            raise self._fail(IncompleteBody("the request body was cut off")) from exc
        if not chunk:
            return
        if type(chunk) is not bytes:
            chunk = bytes(chunk)  # slices handed to consumers must be immutable bytes
        if self._preamble is not None:
            chunk = self._skip_preamble(chunk, self._preamble)
            if not chunk:
                return
        try:
            self._parser.write(chunk)
        except StorageError as exc:  # a limit raised by one of our callbacks
            raise self._fail(exc) from None
        except Exception as exc:
            raise self._fail(_translate_parser_error(exc)) from exc
        if self._ended:
            await self._close_body()

    def _skip_preamble(self, chunk: bytes, seen: int) -> bytes:
        # python-multipart skips a preamble only if it starts with CR/LF and only within
        # one chunk, so whether a body parsed would depend on how it was chunked. Find the
        # first delimiter here instead, and feed the parser from its "--boundary" on.
        tail, delimiter = self._preamble_tail, self._delimiter
        if seen == 0 and chunk.startswith(delimiter[1:]):
            self._preamble = None  # the usual case: no preamble, no copy
            return chunk
        data = tail + chunk
        # data[i] is body byte seen - len(tail) + i (the made-up LF is byte -1). The
        # search stops where a delimiter would start too late to matter.
        limit = self._max_preamble + 2 - seen + len(tail) + len(delimiter)
        found = data.find(delimiter, 0, max(0, limit))
        if found >= 0:
            # The delimiter's line break (CRLF, or a bare LF) is not part of the preamble.
            preamble = seen - len(tail) + found - (found > 0 and data[found - 1] == _CR)
            if preamble > self._max_preamble:
                raise self._fail(self._preamble_too_long())
            self._preamble = None
            return data[found + 1 :]
        seen += len(chunk)
        # Fail once even a delimiter begun in the kept tail would start too late.
        if seen - len(delimiter) > self._max_preamble + 1:
            raise self._fail(self._preamble_too_long())
        self._preamble = seen
        # One byte more than a split delimiter needs, to see the CR before its LF.
        self._preamble_tail = data[-len(delimiter) :]
        return b""

    def _preamble_too_long(self) -> MalformedMultipart:
        return MalformedMultipart(f"more than {self._max_preamble} bytes before the first boundary")

    def _error_at_end_of_body(self) -> StorageError:
        if self._preamble:
            tail, delimiter = self._preamble_tail, self._delimiter
            # Data but no boundary is garbage, unless the body stopped inside one.
            if not any(tail.endswith(delimiter[:k]) for k in range(2, len(delimiter))):
                return MalformedMultipart("the body holds no multipart boundary")
        return IncompleteBody("the request body ended before the closing multipart boundary")

    def _fail(self, error: StorageError) -> StorageError:
        # The parser's state is undefined after an error: every later read fails the same way.
        self._error = error
        self._events.clear()
        return error

    async def _close_body(self) -> None:
        aclose = getattr(self._body, "aclose", None)
        if aclose is not None:
            await aclose()

    # -- parser callbacks (synchronous, inside parser.write) ---------------------------

    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise RequestTooLarge(f"more than {self._max_parts} parts in the multipart body")
        self._header_size = 0
        self._headers = {}

    def _count_header(self, size: int) -> None:
        self._header_size += size
        if self._header_size > self._max_header_size:
            raise RequestTooLarge(f"a part's headers are longer than {self._max_header_size} bytes")

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._count_header(_HEADER_LINE_OVERHEAD)
        name = bytes(self._header_name).lower()
        if name in self._headers and name in (b"content-disposition", b"content-type"):
            raise MalformedMultipart(f"a part has two {name.decode('ascii')} headers")
        self._headers[name] = bytes(self._header_value).strip(b" \t")
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        headers = _parse_part_headers(self._headers)
        self._field_limited = headers.filename is None
        self._field_size = 0
        self._events.append(headers)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field_limited:
            self._field_size += end - start
            if self._field_size > self._max_field_size:
                raise RequestTooLarge(f"a form field is longer than {self._max_field_size} bytes")
        # In the middle of a file the parser reports whole chunks: pass them on uncopied.
        self._events.append(data if start == 0 and end == len(data) else data[start:end])

    def _on_part_end(self) -> None:
        self._events.append(_Marker.PART_END)

    def _on_end(self) -> None:
        self._ended = True
        self._events.append(_Marker.END)


def _parse_boundary(content_type_header: str) -> bytes:
    try:
        media_type, params = parse_options_header(content_type_header)
    except Exception as exc:  # e.g. a str that is not latin-1
        raise MalformedMultipart("the Content-Type header cannot be parsed") from exc
    if media_type != b"multipart/form-data":
        raise MalformedMultipart("the Content-Type is not multipart/form-data")
    boundary = params.get(b"boundary")
    if boundary is None or not _BOUNDARY.fullmatch(boundary):
        raise MalformedMultipart("the multipart boundary is missing or invalid")
    return boundary


def _translate_parser_error(exc: Exception) -> StorageError:
    # python-multipart has no distinct class for its limits; match its message, and
    # anything unrecognised is at worst reported as malformed.
    if str(exc).startswith("Maximum header"):
        return RequestTooLarge("a part's headers are too large")
    return MalformedMultipart()


def _parse_part_headers(headers: dict[bytes, bytes]) -> PartHeaders:
    disposition = headers.get(b"content-disposition")
    if disposition is None:
        raise MalformedMultipart("a part has no Content-Disposition header")
    kind, params = parse_options_header(disposition)
    if kind != b"form-data":
        raise MalformedMultipart("a part's Content-Disposition is not form-data")
    name = params.get(b"name")
    if name is None:
        raise MalformedMultipart("a part's Content-Disposition has no name")
    raw_filename = params.get(b"filename")
    filename = None if raw_filename is None else _decode_header_text(raw_filename)
    if b"*" in disposition:  # only then can there be an RFC 5987 filename*
        filename = _extended_filename(disposition) or filename
    content_type = headers.get(b"content-type")
    md5, sha256 = headers.get(b"content-md5"), headers.get(b"x-checksum-sha256")
    return PartHeaders(
        name=_decode_header_text(name),
        filename=filename,
        content_type=None if not content_type else _decode_header_text(content_type),
        content_md5=None if md5 is None else md5.decode("latin-1"),
        checksum_sha256=None if sha256 is None else sha256.decode("latin-1"),
    )


def _decode_header_text(value: bytes) -> str:
    # Browsers and httpx send UTF-8 in quoted strings; a few old clients send latin-1.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _extended_filename(disposition: bytes) -> str | None:
    # parse_options_header drops `key*` parameters (RFC 7578 forbids them), but some
    # clients send filename*=UTF-8''... and per RFC 6266 it wins over filename. The
    # stdlib's parameter parser decodes RFC 2231/5987, continuations included.
    message = email.message.Message()
    message["content-disposition"] = disposition.decode("latin-1")
    for key, value in message.get_params(header="content-disposition") or ():
        if key == "filename" and isinstance(value, tuple):
            try:
                return email.utils.collapse_rfc2231_value(value, errors="strict")
            except UnicodeDecodeError:
                raise MalformedMultipart("a part's filename* is not valid in its charset") from None
    return None
