"""Get/Put/DeleteObjectTagging: S3's object tags are the object's tags."""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.domain.metadata import parse_tags
from tfstorage.s3api import xml
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import xml_response
from tfstorage.service.authorization import authorize


async def get_object_tagging(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "read", req.bucket, req.key)
    version = await req.storage.reader.resolve(req.bucket, req.key, req.query.get("versionId"))
    tags = [("Tag", [("Key", k), ("Value", v)]) for k, v in sorted(version.tags.items())]
    return xml_response(
        "Tagging", [("TagSet", tags)], headers={"x-amz-version-id": version.file_id}
    )


async def put_object_tagging(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    body = await xml.read_capped(req.body())
    tags = parse_tags(xml.parse_tagging(body))
    return await _set_tags(req, tags)


async def delete_object_tagging(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    response = await _set_tags(req, {})
    response.status_code = 204
    return response


async def _set_tags(req: S3Request, tags: dict[str, str]) -> Response:
    version = await req.storage.reader.resolve(req.bucket, req.key, req.query.get("versionId"))
    updated = await req.storage.objects.update(
        version.file_id, metadata=None, tags=tags, content_type=None
    )
    await req.audit("update", bucket=req.bucket, key=req.key, file_id=updated.file_id, tags=tags)
    return Response(status_code=200, headers={"x-amz-version-id": updated.file_id})
