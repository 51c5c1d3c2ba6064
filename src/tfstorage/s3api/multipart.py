"""Multipart uploads (Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts,
ListMultipartUploads) on the service's resumable upload sessions: the same parts,
assembly and commit as the REST API's, so a completed upload goes through the one write
path."""

from __future__ import annotations

import logging
import re

from starlette.responses import Response

from tfstorage.domain.conditions import parse_condition
from tfstorage.domain.content_headers import stored_content_headers
from tfstorage.domain.ranges import ByteRange
from tfstorage.domain.uploads import MAX_PARTS, UploadSession, select_parts
from tfstorage.domain.version_listing import s3_version_id
from tfstorage.errors import (
    InternalError,
    InvalidArgument,
    InvalidRange,
    NoSuchUpload,
    PreconditionFailed,
    StorageError,
)
from tfstorage.s3api import xml
from tfstorage.s3api.errors import render_error
from tfstorage.s3api.keepalive import PatientResponse
from tfstorage.s3api.object_lock import requested_lock
from tfstorage.s3api.objects import check_read_conditions, copy_source, parse_tagging, user_metadata
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import Node, iso_time, object_etag, quoted_etag, xml_response
from tfstorage.s3api.version_ids import written_version_headers
from tfstorage.service.authorization import authorize
from tfstorage.service.writes import WriteResult

log = logging.getLogger(__name__)

_PAGE = 1000  # S3's default and largest page of parts and of uploads
_COPY_RANGE = re.compile(r"bytes=(\d{1,19})-(\d{1,19})")


async def _session(req: S3Request) -> UploadSession:
    upload_id = req.query.get("uploadId", "")
    session = await req.storage.uploads.get(upload_id)
    if (session.bucket, session.key) != (req.bucket, req.key):
        raise NoSuchUpload(upload_id)  # an upload of another object names nothing here
    return session


def _part_number(req: S3Request) -> int:
    number = req.query.get("partNumber", "")
    if not number.isascii() or not number.isdigit() or not 1 <= int(number[:6]) <= MAX_PARTS:
        raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
    return int(number)


def _page_size(req: S3Request, name: str) -> int:
    value = req.query.get(name)
    if value is None:
        return _PAGE
    if not value.isascii() or not value.isdigit():
        raise InvalidArgument(f"{name} must be a non-negative integer")
    return min(int(value[:7]), _PAGE)


async def create_multipart_upload(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    session = await req.storage.uploads.create(
        req.bucket,
        req.key,
        content_type=req.header("content-type"),
        metadata=user_metadata(req),
        tags=parse_tagging(req.header("x-amz-tagging")),
        size=None,
        sha256=None,
        created_by=req.caller.name,
        max_size=req.caller.max_upload,
        lock=await requested_lock(req),
        content_headers=stored_content_headers(req.header),
    )
    return xml_response(
        "InitiateMultipartUploadResult",
        [("Bucket", req.bucket), ("Key", req.key), ("UploadId", session.upload_id)],
    )


async def upload_part(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    number = _part_number(req)
    session = await _session(req)
    body = req.body()  # aws-chunked decoded, Content-MD5 and x-amz-checksum-* verified
    part = await req.storage.uploads.put_part(
        session,
        number,
        body,
        length=req.declared_size(),
        md5=None,
        sha256=None,
        max_size=req.caller.max_upload,
    )
    return Response(status_code=200, headers={"ETag": quoted_etag(part.md5)})


async def upload_part_copy(req: S3Request) -> Response:
    """A part whose bytes are (a range of) a stored object, streamed from the blob store
    into the part as any part's body is: hashed, counted and checked the same way."""
    storage = req.storage
    src_bucket, src_key, src_version_id = copy_source(req)
    await authorize(storage, req.caller, "read", src_bucket, src_key)
    await authorize(storage, req.caller, "write", req.bucket, req.key)
    number = _part_number(req)
    session = await _session(req)
    source = await storage.reader.resolve(src_bucket, src_key, src_version_id)
    if not check_read_conditions(req, source, prefix="x-amz-copy-source-"):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    byte_range = _copy_range(req.header("x-amz-copy-source-range"), source.size)
    length = source.size if byte_range is None else byte_range.length
    stream = await storage.reader.open(source, byte_range)
    part = await storage.uploads.put_part(
        session, number, stream, length=length, md5=None, sha256=None,
        max_size=req.caller.max_upload,
    )  # fmt: skip
    return xml_response(
        "CopyPartResult",
        [("LastModified", iso_time(part.stored_at)), ("ETag", quoted_etag(part.md5))],
        headers={"x-amz-copy-source-version-id": s3_version_id(source)},
    )


def _copy_range(header: str | None, size: int) -> ByteRange | None:
    """x-amz-copy-source-range: exactly `bytes=first-last`, inside the source."""
    if header is None:
        return None
    match = _COPY_RANGE.fullmatch(header.strip())
    if match is None:
        raise InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last where"
            " first and last are the zero-based offsets of the first and last bytes to copy"
        )
    first, last = int(match[1]), int(match[2])
    if first > last or last >= size:
        raise InvalidRange(size, "The requested range is not satisfiable")
    return ByteRange(first, last + 1)


async def complete_multipart_upload(req: S3Request) -> Response:
    """Checks what can be checked at once (so those errors keep their status), then
    assembles and commits; a long assembly answers 200 and keeps the connection busy
    (keepalive.py), a retry of a completion that succeeded answers the same version."""
    storage = req.storage
    await authorize(storage, req.caller, "write", req.bucket, req.key)
    request = xml.parse_complete_multipart_upload(await xml.read_capped(req.body()))
    requested = [(p.part_number, p.etag) for p in request.parts]
    upload_id = req.query.get("uploadId", "")
    try:
        session = await _session(req)
    except NoSuchUpload:
        earlier = await storage.uploads.completed(upload_id, requested)
        if (earlier.version.bucket, earlier.version.key) != (req.bucket, req.key):
            raise NoSuchUpload(upload_id) from None
        return _completed(req, earlier)
    select_parts(session.parts, requested)  # InvalidPart, InvalidPartOrder, EntityTooSmall
    condition = parse_condition(req.header("if-match"), req.header("if-none-match"))
    await storage.writer.precheck(req.bucket, req.key, condition)

    async def work() -> Response:
        result = await storage.uploads.complete(
            upload_id, requested, sha256=None, created_by=req.caller.name, condition=condition
        )
        await req.audit("upload", bucket=req.bucket, key=req.key, file_id=result.version.file_id)
        return _completed(req, result)

    return PatientResponse(
        work,
        wait=storage.settings.s3_complete_keepalive_seconds,
        on_error=lambda exc: _error_response(req, exc),
    )


def _completed(req: S3Request, result: WriteResult) -> Response:
    version = result.version
    return xml_response(
        "CompleteMultipartUploadResult",
        [
            ("Location", f"/{req.bucket}/{req.key}"),
            ("Bucket", req.bucket),
            ("Key", req.key),
            ("ETag", object_etag(version)),  # S3's "<md5 of the parts' md5s>-<parts>"
        ],
        headers=written_version_headers(version),
    )


def _error_response(req: S3Request, exc: Exception) -> Response:
    if not isinstance(exc, StorageError):
        log.error("completing upload %s failed", req.query.get("uploadId"), exc_info=exc)
        exc = InternalError()
    rendered = render_error(exc, resource=req.http.scope["path"], request_id=req.request_id)
    return Response(rendered.body, status_code=rendered.status, headers=rendered.headers)


async def abort_multipart_upload(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    session = await _session(req)
    await req.storage.uploads.abort(session.upload_id)
    return Response(status_code=204)


async def list_parts(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    session = await _session(req)
    limit = _page_size(req, "max-parts")
    marker = req.query.get("part-number-marker", "0")
    if not marker.isascii() or not marker.isdigit():
        raise InvalidArgument("part-number-marker must be a non-negative integer")
    after = int(marker[:6])
    remaining = [p for p in session.parts if p.part_number > after]  # in number order
    page, truncated = remaining[:limit], len(remaining) > limit
    parts: list[Node] = [
        (
            "Part",
            [
                ("PartNumber", p.part_number),
                ("LastModified", iso_time(p.stored_at)),
                ("ETag", quoted_etag(p.md5)),
                ("Size", p.size),
            ],
        )
        for p in page
    ]
    who = [("ID", session.created_by), ("DisplayName", session.created_by)]
    return xml_response(
        "ListPartsResult",
        [
            ("Bucket", req.bucket),
            ("Key", req.key),
            ("UploadId", session.upload_id),
            ("Initiator", who),
            ("Owner", who),
            ("StorageClass", "STANDARD"),
            ("PartNumberMarker", after),
            ("NextPartNumberMarker", page[-1].part_number if page else after),
            ("MaxParts", limit),
            ("IsTruncated", truncated),
            *parts,
        ],
    )


async def list_multipart_uploads(req: S3Request) -> Response:
    prefix = req.query.get("prefix", "")
    await authorize(req.storage, req.caller, "write", req.bucket, prefix)
    delimiter = req.query.get("delimiter", "")
    key_marker = req.query.get("key-marker", "")
    upload_id_marker = req.query.get("upload-id-marker", "")
    limit = _page_size(req, "max-uploads")
    page = await req.storage.uploads.page(
        req.bucket,
        prefix=prefix,
        delimiter=delimiter,
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        limit=limit,
    )
    children: list[Node] = []
    next_key, next_id = "", ""
    for entry in page.entries:
        if isinstance(entry, str):
            children.append(("CommonPrefixes", [("Prefix", entry)]))
            next_key, next_id = entry, ""
            continue
        who = [("ID", entry.created_by), ("DisplayName", entry.created_by)]
        children.append(
            (
                "Upload",
                [
                    ("Key", entry.key),
                    ("UploadId", entry.upload_id),
                    ("Initiator", who),
                    ("Owner", who),
                    ("StorageClass", "STANDARD"),
                    ("Initiated", iso_time(entry.created_at)),
                ],
            )
        )
        next_key, next_id = entry.key, entry.upload_id
    return xml_response(
        "ListMultipartUploadsResult",
        [
            ("Bucket", req.bucket),
            ("KeyMarker", key_marker),
            ("UploadIdMarker", upload_id_marker),
            ("NextKeyMarker", next_key if page.truncated else None),
            ("NextUploadIdMarker", next_id if page.truncated else None),
            ("Prefix", prefix),
            ("Delimiter", delimiter or None),
            ("MaxUploads", limit),
            ("IsTruncated", page.truncated),
            *children,
        ],
    )
