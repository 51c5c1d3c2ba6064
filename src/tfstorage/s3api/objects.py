"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, CopyObject.

Each is a translation: S3 headers in, one `service/` call, S3 headers out. PutObject
hands the verified body (aws-chunked decoded, signatures and checksums checked as it
streams) to the same ObjectWriter a REST upload uses.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.responses import Response, StreamingResponse

from tfstorage.domain.conditions import parse_condition
from tfstorage.domain.content_headers import stored_content_headers
from tfstorage.domain.metadata import parse_tags, validate_metadata
from tfstorage.domain.preconditions import etag_matches, modified_after, not_modified_after
from tfstorage.domain.ranges import ByteRange, parse_range
from tfstorage.domain.records import ObjectVersion
from tfstorage.domain.version_listing import marked_head, s3_version_id
from tfstorage.errors import (
    InvalidArgument,
    InvalidRequest,
    NoSuchKey,
    NoSuchVersion,
    PreconditionFailed,
)
from tfstorage.s3api import acl
from tfstorage.s3api.checksums import algorithm_of
from tfstorage.s3api.errors import InvalidPartNumber, MethodNotAllowed
from tfstorage.s3api.object_lock import governance_bypass, lock_headers, requested_lock
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import (
    http_date,
    iso_time,
    object_etag,
    object_etags,
    quoted_etag,
    xml_response,
)
from tfstorage.s3api.version_ids import delete_latest, written_version_headers
from tfstorage.service.authorization import authorize
from tfstorage.service.reads import WHOLE_BODY_UP_TO, read_whole
from tfstorage.service.writes import Checksums

META_PREFIX = "x-amz-meta-"
# response-* query parameters and the header each overrides on a GET.
_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
    "response-content-language": "Content-Language",
    "response-cache-control": "Cache-Control",
    "response-expires": "Expires",
}


def user_metadata(req: S3Request) -> dict[str, Any]:
    """`x-amz-meta-*` headers: the object's user metadata, names lowercase as S3 keeps them."""
    found = {
        name[len(META_PREFIX) :]: value
        for name, value in req.lower_headers.items()
        if name.startswith(META_PREFIX)
    }
    return validate_metadata(found)


def parse_tagging(header: str | None) -> dict[str, str]:
    """`x-amz-tagging`: a URL-encoded query string of tags."""
    if not header:
        return {}
    return parse_tags(dict(parse_qsl(header, keep_blank_values=True)))


def _header_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if text.isascii() and text.isprintable():
        return text
    # What S3 does with values a header cannot carry: RFC 2047 encoded words.
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8", "replace")).decode() + "?="


def object_headers(version: ObjectVersion) -> dict[str, str]:
    headers = {
        **version.content_headers,
        "ETag": object_etag(version),
        "Last-Modified": http_date(version.created_at),
        "Accept-Ranges": "bytes",
        "Content-Type": version.content_type,
        "x-amz-version-id": s3_version_id(version),
        "X-Content-Type-Options": "nosniff",
        # This project's own integrity: the whole object's SHA-256, as the REST API sends.
        "X-Checksum-SHA256": version.sha256,
    }
    for name, value in version.metadata.items():
        headers[META_PREFIX + name] = _header_value(value)
    if version.tags:
        headers["x-amz-tagging-count"] = str(len(version.tags))
    headers.update(lock_headers(version))
    return headers


async def put_object(req: S3Request) -> Response:
    storage, caller = req.storage, req.caller
    await authorize(storage, caller, "write", req.bucket, req.key)
    condition = parse_condition(req.header("if-match"), req.header("if-none-match"))
    metadata = user_metadata(req)
    tags = parse_tagging(req.header("x-amz-tagging"))
    lock = await requested_lock(req)
    if req.header("x-amz-acl") is not None:
        acl.check_object_acl(req, await storage.buckets.is_public_read(req.bucket))
    body = req.body()  # refuses malformed auth/checksum headers before any byte is read
    result = await storage.writer.put_object(
        req.bucket,
        req.key,
        body,
        declared_size=req.declared_size(),
        content_type=req.header("content-type"),
        metadata=metadata,
        tags=tags,
        checksums=Checksums(),  # Content-MD5 and x-amz-checksum-* are verified by body()
        created_by=caller.name,
        max_size=caller.max_upload,
        condition=condition,
        lock=lock,
        content_headers=stored_content_headers(req.header),
    )
    version = result.version
    await req.audit("upload", bucket=req.bucket, key=req.key, file_id=version.file_id)
    headers = {"ETag": quoted_etag(version.etag), **_sent_checksums(req, version)}
    headers.update(written_version_headers(version))
    return Response(status_code=200, headers=headers)


def _sent_checksums(req: S3Request, version: ObjectVersion) -> dict[str, str]:
    """The checksum a PutObject was sent with, verified as the body streamed, told back
    as S3 does; SHA-256 always from the stored digest (it may have come in a trailer)."""
    named = (req.header("x-amz-sdk-checksum-algorithm") or "").lower()
    if named == "sha256" or req.header("x-amz-trailer") == "x-amz-checksum-sha256":
        sha256 = base64.b64encode(bytes.fromhex(version.sha256)).decode()
        return {"x-amz-checksum-sha256": sha256}
    return {
        name: value
        for name, value in req.lower_headers.items()
        if algorithm_of(name) is not None and name != "x-amz-checksum-type"
    }


def check_read_conditions(req: S3Request, version: ObjectVersion, *, prefix: str = "") -> bool:
    """S3's order of If-* checks; False when the answer is 304 Not Modified."""
    etags = object_etags(version)
    if_match = req.header(prefix + "if-match")
    if if_match is not None and not etag_matches(if_match, *etags, weak=False):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    unmodified = req.header(prefix + "if-unmodified-since")
    if (
        if_match is None
        and unmodified is not None
        and modified_after(unmodified, version.created_at)
    ):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    if_none_match = req.header(prefix + "if-none-match")
    if if_none_match is not None:
        return not etag_matches(if_none_match, *etags)
    modified = req.header(prefix + "if-modified-since")
    return not (modified is not None and not_modified_after(modified, version.created_at))


async def get_object(req: S3Request) -> Response:
    storage = req.storage
    await authorize(storage, req.caller, "read", req.bucket, req.key)
    version_id = req.query.get("versionId")
    if version_id is not None and marked_head(version_id) is not None:
        # A delete marker has no bytes: S3 answers 405 and says what it is.
        raise MethodNotAllowed(
            headers={"x-amz-delete-marker": "true", "x-amz-version-id": version_id}
        )
    try:
        version = await storage.reader.resolve(req.bucket, req.key, version_id)
    except NoSuchKey as exc:
        if version_id is None:
            exc.headers.update(await _delete_marker_headers(req))
        raise
    headers = object_headers(version)
    if not check_read_conditions(req, version):
        keep = ("ETag", "Last-Modified", "x-amz-version-id")
        return Response(status_code=304, headers={k: headers[k] for k in keep})
    byte_range: ByteRange | None = None
    range_header = req.header("range")
    part = req.query.get("partNumber")
    if part is not None:
        if range_header is not None:
            raise InvalidRequest("Cannot specify both Range header and partNumber query parameter")
        byte_range = await _part_range(req, version, part)
        headers["x-amz-mp-parts-count"] = str(version.part_count or 1)
    elif range_header is not None:
        byte_range = parse_range(range_header, version.size)
    for name, header in _OVERRIDES.items():
        if name in req.query:
            if req.caller.anonymous:
                raise InvalidRequest("response-* overrides need a signed request")
            value = req.query[name]
            if not value.isprintable() or len(value) > 1024:
                raise InvalidArgument(f"{name} is not a valid header value")
            headers[header] = value
    status = 200
    length = version.size
    if byte_range is not None:
        status = 206
        length = byte_range.length
        headers["Content-Range"] = byte_range.content_range(version.size)
    headers["Content-Length"] = str(length)
    if byte_range is None and (req.header("x-amz-checksum-mode") or "").upper() == "ENABLED":
        # The whole object's SHA-256, recorded as it was written: clients verify the
        # bytes end to end (a range has no checksum of its own, as on S3).
        headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(version.sha256)).decode()
        headers["x-amz-checksum-type"] = "FULL_OBJECT"
    if req.method == "HEAD":
        return Response(status_code=status, headers=headers)
    stream = await storage.reader.open(version, byte_range)
    if byte_range is None and length <= WHOLE_BODY_UP_TO:
        return Response(await read_whole(stream), status_code=status, headers=headers)
    return StreamingResponse(stream, status_code=status, headers=headers)


async def _delete_marker_headers(req: S3Request) -> dict[str, str]:
    """A GET or HEAD of a key in the trash: S3 says a delete marker is what it found
    ("false" in a bucket that never had versioning, whose deletes leave no marker)."""
    if not await req.storage.objects.in_trash(req.bucket, req.key):
        return {}
    versioned = (await req.storage.buckets.get(req.bucket)).versioning_set
    return {"x-amz-delete-marker": "true" if versioned else "false"}


async def _part_range(req: S3Request, version: ObjectVersion, part: str) -> ByteRange | None:
    """The bytes ?partNumber= names; None for the whole of an object written whole."""
    if not part.isascii() or not part.isdigit() or not 1 <= int(part[:6]) <= 10_000:
        raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
    found = await req.storage.reader.part_range(version, int(part))
    if found is None:
        raise InvalidPartNumber("The requested partnumber is not satisfiable")
    return None if version.parts_etag is None else found


async def delete_object(req: S3Request) -> Response:
    storage = req.storage
    await authorize(storage, req.caller, "delete", req.bucket, req.key)
    version_id = req.query.get("versionId")
    bypass = await governance_bypass(req)
    try:
        if version_id is not None:
            gone = await storage.objects.delete_key_version(
                req.bucket, req.key, version_id, bypass_governance=bypass
            )
        else:
            condition = parse_condition(req.header("if-match"), None)
            gone, marker = await delete_latest(storage, req.bucket, req.key, condition)
    except (NoSuchKey, NoSuchVersion):
        # A version deleted already (or by a concurrent request) included: S3's deletes
        # are idempotent. A missing bucket is still an error.
        await storage.buckets.get(req.bucket)
        return Response(status_code=204)  # S3: deleting what is not there succeeds
    action = "delete_version" if version_id is not None else "delete"
    await req.audit(action, bucket=req.bucket, key=req.key, file_id=gone.file_id)
    headers: dict[str, str] = {}
    if version_id is not None:
        headers["x-amz-version-id"] = version_id
        if marked_head(version_id) is not None:
            headers["x-amz-delete-marker"] = "true"
    elif marker is not None:
        # The key went to the trash, which S3 clients see as a new delete marker.
        headers["x-amz-delete-marker"] = "true"
        headers["x-amz-version-id"] = marker
    return Response(status_code=204, headers=headers)


def copy_source(req: S3Request) -> tuple[str, str, str | None]:
    raw = req.header("x-amz-copy-source") or ""
    path, _, query = raw.partition("?")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise InvalidArgument("x-amz-copy-source must be <bucket>/<key>")
    version_id = None
    if query:
        params = dict(parse_qsl(query, keep_blank_values=True))
        if set(params) - {"versionId"}:
            raise InvalidArgument("x-amz-copy-source may only carry a versionId")
        version_id = params.get("versionId")
    return bucket, key, version_id


async def copy_object(req: S3Request) -> Response:
    storage, caller = req.storage, req.caller
    src_bucket, src_key, src_version_id = copy_source(req)
    await authorize(storage, caller, "read", src_bucket, src_key)
    await authorize(storage, caller, "write", req.bucket, req.key)
    if req.header("x-amz-acl") is not None:
        acl.check_object_acl(req, await storage.buckets.is_public_read(req.bucket))
    directive = (req.header("x-amz-metadata-directive") or "COPY").upper()
    tag_directive = (req.header("x-amz-tagging-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE") or tag_directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("a directive must be COPY or REPLACE")
    source = await storage.reader.resolve(src_bucket, src_key, src_version_id)
    if not check_read_conditions(req, source, prefix="x-amz-copy-source-"):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    same = (src_bucket, src_key) == (req.bucket, req.key) and src_version_id is None
    if same and directive == "COPY" and tag_directive == "COPY":
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect "
            "location or encryption attributes."
        )
    replace = directive == "REPLACE"
    lock = await requested_lock(req)
    version = await storage.objects.copy(
        source,
        req.bucket,
        req.key,
        created_by=caller.name,
        metadata=user_metadata(req) if replace else None,
        content_type=req.header("content-type") if replace else None,
        tags=parse_tagging(req.header("x-amz-tagging")) if tag_directive == "REPLACE" else None,
        lock=lock,
        # REPLACE: what this request gives, none of the source's (as S3).
        content_headers=stored_content_headers(req.header) if replace else None,
    )
    await req.audit(
        "copy",
        bucket=req.bucket,
        key=req.key,
        file_id=version.file_id,
        source=f"{src_bucket}/{src_key}",
    )
    headers = written_version_headers(version)
    headers["x-amz-copy-source-version-id"] = s3_version_id(source)
    return xml_response(
        "CopyObjectResult",
        [("LastModified", iso_time(version.created_at)), ("ETag", quoted_etag(version.etag))],
        headers=headers,
    )
