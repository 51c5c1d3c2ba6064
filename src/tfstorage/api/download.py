"""Object responses: conditional requests, a single byte range, safe headers, streaming."""

from __future__ import annotations

from email.utils import format_datetime
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from tfstorage.domain.preconditions import etag_matches, modified_after, not_modified_after
from tfstorage.domain.ranges import ByteRange, parse_range
from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import PreconditionFailed
from tfstorage.service.reads import WHOLE_BODY_UP_TO, read_whole
from tfstorage.service.storage import Storage


def content_disposition(filename: str) -> str:
    """RFC 6266 `attachment` with an ASCII fallback and a UTF-8 `filename*`.

    Quotes, backslashes, CR/LF and other control characters can never reach the
    header: the fallback replaces them and `filename*` percent-encodes them.
    """
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%;' else "_" for c in filename)
    encoded = quote(filename, safe="")
    if fallback == filename:
        return f'attachment; filename="{fallback}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _etag(version: ObjectVersion) -> str:
    return f'"{version.etag}"'


def _matches(header: str, version: ObjectVersion, *, weak: bool = True) -> bool:
    # The REST API answers the MD5; the S3 multipart ETag names the same bytes.
    also = () if version.parts_etag is None else (f'"{version.parts_etag}"',)
    return etag_matches(header, _etag(version), *also, weak=weak)


def _not_after(header: str, version: ObjectVersion) -> bool:
    """True when the object was not modified after the header's date (1 s resolution)."""
    return not_modified_after(header, version.created_at)


def object_headers(version: ObjectVersion) -> dict[str, str]:
    # The stored content headers, but a download is always an attachment: the API's
    # origin never lets a browser render or name a user's file as its uploader chose.
    stored = {k: v for k, v in version.content_headers.items() if k != "Content-Disposition"}
    return {
        **stored,
        "ETag": _etag(version),
        "Last-Modified": format_datetime(version.created_at, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Type": version.content_type,
        "Content-Disposition": content_disposition(version.key.rsplit("/", 1)[-1]),
        # User files are never rendered on the API's origin.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-File-Id": version.file_id,
        "X-Checksum-SHA256": version.sha256,
    }


async def object_response(request: Request, storage: Storage, version: ObjectVersion) -> Response:
    headers = object_headers(version)
    h = request.headers

    if (m := h.get("if-match")) is not None and not _matches(m, version, weak=False):
        raise PreconditionFailed("If-Match does not match the object's ETag")
    u = h.get("if-unmodified-since")
    if u is not None and m is None and modified_after(u, version.created_at):
        raise PreconditionFailed("the object was modified after If-Unmodified-Since")
    if (n := h.get("if-none-match")) is not None:
        if _matches(n, version):
            return _not_modified(headers)
    elif (s := h.get("if-modified-since")) is not None and _not_after(s, version):
        return _not_modified(headers)

    byte_range: ByteRange | None = None
    range_header = h.get("range")
    if range_header is not None and _if_range_holds(h.get("if-range"), headers["ETag"], version):
        byte_range = parse_range(range_header, version.size)

    status = 200
    length = version.size
    if byte_range is not None:
        status = 206
        length = byte_range.length
        headers["Content-Range"] = byte_range.content_range(version.size)
    headers["Content-Length"] = str(length)

    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    stream = await storage.reader.open(version, byte_range)
    if byte_range is None and length <= WHOLE_BODY_UP_TO:
        return Response(await read_whole(stream), status_code=status, headers=headers)
    return StreamingResponse(stream, status_code=status, headers=headers)


def _if_range_holds(if_range: str | None, etag: str, version: ObjectVersion) -> bool:
    if if_range is None:
        return True
    if if_range.startswith(('"', "W/")):
        return if_range == etag  # If-Range needs a strong match
    return _not_after(if_range, version)


def _not_modified(headers: dict[str, str]) -> Response:
    keep = ("ETag", "Last-Modified", "X-File-Id")
    return Response(status_code=304, headers={k: headers[k] for k in keep})
