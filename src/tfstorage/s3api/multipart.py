"""Multipart uploads (Create, UploadPart, Complete, Abort, ListParts, ListMultipartUploads)
on the service's resumable upload sessions: the same parts, assembly and commit as the
REST API's, so a completed upload goes through the one write path."""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.domain.uploads import UploadSession
from tfstorage.errors import InvalidArgument, NoSuchUpload
from tfstorage.s3api import xml
from tfstorage.s3api.object_lock import requested_lock
from tfstorage.s3api.objects import parse_tagging, user_metadata
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import Node, iso_time, quoted_etag, xml_response
from tfstorage.service.authorization import authorize


async def _session(req: S3Request) -> UploadSession:
    upload_id = req.query.get("uploadId", "")
    session = await req.storage.uploads.get(upload_id)
    if (session.bucket, session.key) != (req.bucket, req.key):
        raise NoSuchUpload(upload_id)  # an upload of another object names nothing here
    return session


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
    )
    return xml_response(
        "InitiateMultipartUploadResult",
        [("Bucket", req.bucket), ("Key", req.key), ("UploadId", session.upload_id)],
    )


async def upload_part(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    number = req.query.get("partNumber", "")
    if not number.isascii() or not number.isdigit() or len(number) > 5:
        raise InvalidArgument("Part number must be an integer between 1 and 10000, inclusive")
    session = await _session(req)
    body = req.body()  # aws-chunked decoded, Content-MD5 and x-amz-checksum-* verified
    part = await req.storage.uploads.put_part(
        session,
        int(number),
        body,
        length=req.declared_size(),
        md5=None,
        sha256=None,
        max_size=req.caller.max_upload,
    )
    return Response(status_code=200, headers={"ETag": quoted_etag(part.md5)})


async def complete_multipart_upload(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    await _session(req)
    request = xml.parse_complete_multipart_upload(await xml.read_capped(req.body()))
    result = await req.storage.uploads.complete(
        req.query["uploadId"],
        [(p.part_number, p.etag) for p in request.parts],
        sha256=None,
        created_by=req.caller.name,
    )
    version = result.version
    await req.audit("upload", bucket=req.bucket, key=req.key, file_id=version.file_id)
    return xml_response(
        "CompleteMultipartUploadResult",
        [
            ("Location", f"/{req.bucket}/{req.key}"),
            ("Bucket", req.bucket),
            ("Key", req.key),
            # The whole object's MD5, as HEAD and GET answer (not S3's "<md5>-<parts>").
            ("ETag", quoted_etag(version.etag)),
        ],
        headers={"x-amz-version-id": version.file_id},
    )


async def abort_multipart_upload(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    session = await _session(req)
    await req.storage.uploads.abort(session.upload_id)
    return Response(status_code=204)


async def list_parts(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    session = await _session(req)
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
        for p in sorted(session.parts, key=lambda p: p.part_number)
    ]
    return xml_response(
        "ListPartsResult",
        [
            ("Bucket", req.bucket),
            ("Key", req.key),
            ("UploadId", session.upload_id),
            ("IsTruncated", False),
            *parts,
        ],
    )


async def list_multipart_uploads(req: S3Request) -> Response:
    prefix = req.query.get("prefix", "")
    await authorize(req.storage, req.caller, "write", req.bucket, prefix)
    await req.storage.buckets.get(req.bucket)
    sessions = [s for s in await req.storage.uploads.list(req.bucket) if s.key.startswith(prefix)]
    sessions.sort(key=lambda s: (s.key, s.created_at))
    return xml_response(
        "ListMultipartUploadsResult",
        [
            ("Bucket", req.bucket),
            ("Prefix", prefix),
            ("IsTruncated", False),
            *[
                (
                    "Upload",
                    [
                        ("Key", s.key),
                        ("UploadId", s.upload_id),
                        ("Initiated", iso_time(s.created_at)),
                    ],
                )
                for s in sessions
            ],
        ],
    )
