"""GetObjectAttributes: what HEAD tells and more (the parts, the checksum), as XML.

The object is never opened: every answer comes from the index. `x-amz-object-attributes`
names the elements wanted; ObjectParts pages with `x-amz-max-parts` and
`x-amz-part-number-marker` as ListParts does, and only objects assembled from parts
have it.
"""

from __future__ import annotations

import base64

from starlette.responses import Response

from tfstorage.domain.records import ObjectVersion
from tfstorage.domain.uploads import PartLayout
from tfstorage.domain.version_listing import marked_head
from tfstorage.errors import InvalidArgument
from tfstorage.s3api.errors import MethodNotAllowed
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import Node, http_date, xml_response
from tfstorage.service.authorization import authorize

ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})
_MAX_PARTS = 1000


def requested_attributes(header: str | None) -> frozenset[str]:
    names = frozenset(name.strip() for name in (header or "").split(",") if name.strip())
    if not names:
        raise InvalidArgument("x-amz-object-attributes must name at least one attribute")
    unknown = names - ATTRIBUTES
    if unknown:
        raise InvalidArgument(f"Invalid attribute name specified: {sorted(unknown)[0]}")
    return names


def _count(req: S3Request, *names: str) -> int | None:
    """The first of `names` given as a header or a query parameter, as a count."""
    for name in names:
        value = req.header(name)
        if value is None:
            value = req.query.get(name.removeprefix("x-amz-"))
        if value is not None:
            if not value.isascii() or not value.isdigit():
                raise InvalidArgument(f"{name} must be a non-negative integer")
            return int(value[:7])
    return None


def object_parts(layout: PartLayout, marker: int, max_parts: int) -> list[Node]:
    """ObjectParts: the parts after `marker`, at most `max_parts` of them."""
    numbers = range(marker + 1, len(layout.sizes) + 1)
    shown = numbers[:max_parts]
    parts: list[Node] = [
        ("PartsCount", len(layout.sizes)),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", shown[-1] if shown else None),
        ("MaxParts", max_parts),
        ("IsTruncated", len(numbers) > len(shown)),
    ]
    for number in shown:
        parts.append(("Part", [("PartNumber", number), ("Size", layout.sizes[number - 1])]))
    return parts


async def get_object_attributes(req: S3Request) -> Response:
    storage = req.storage
    await authorize(storage, req.caller, "read", req.bucket, req.key)
    wanted = requested_attributes(req.header("x-amz-object-attributes"))
    max_parts = _count(req, "x-amz-max-parts")
    max_parts = _MAX_PARTS if max_parts is None else min(max_parts, _MAX_PARTS)
    marker = _count(req, "x-amz-part-number-marker") or 0
    version_id = req.query.get("versionId")
    if version_id is not None and marked_head(version_id) is not None:
        raise MethodNotAllowed(
            headers={"x-amz-delete-marker": "true", "x-amz-version-id": version_id}
        )
    version = await storage.reader.resolve(req.bucket, req.key, version_id)
    headers = {"Last-Modified": http_date(version.created_at)}
    if version_id is not None or (await storage.buckets.get(req.bucket)).versioning:
        headers["x-amz-version-id"] = version.file_id  # S3 names no version unversioned
    children: list[Node] = []
    if "ETag" in wanted:
        children.append(("ETag", version.parts_etag or version.etag))  # unquoted, as S3
    if "Checksum" in wanted:
        children.append(("Checksum", _checksum(version)))
    if "ObjectParts" in wanted:
        layout = await storage.reader.part_layout(version)
        if layout is not None:
            children.append(("ObjectParts", object_parts(layout, marker, max_parts)))
    if "StorageClass" in wanted:
        children.append(("StorageClass", "STANDARD"))
    if "ObjectSize" in wanted:
        children.append(("ObjectSize", version.size))
    return xml_response("GetObjectAttributesResponse", children, headers=headers)


def _checksum(version: ObjectVersion) -> list[Node]:
    # The whole object's SHA-256, recorded as it was written (parts or not): the same
    # checksum GET answers with x-amz-checksum-mode.
    sha256 = base64.b64encode(bytes.fromhex(version.sha256)).decode()
    return [("ChecksumSHA256", sha256), ("ChecksumType", "FULL_OBJECT")]
