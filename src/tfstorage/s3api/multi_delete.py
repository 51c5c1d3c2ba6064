"""DeleteObjects: up to 1000 keys in one request, each deleted (or refused) on its own."""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.errors import AccessDenied, InvalidRequest, NoSuchKey, NoSuchVersion, StorageError
from tfstorage.s3api import checksums, xml
from tfstorage.s3api.errors import s3_code
from tfstorage.s3api.object_lock import governance_bypass
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import Node, xml_response
from tfstorage.s3api.version_ids import delete_latest
from tfstorage.service.authorization import authorize


async def delete_objects(req: S3Request) -> Response:
    # Authorised first, as every other operation: before the bucket lookup (an anonymous
    # caller must not learn which buckets exist) and before the body is read (nor make
    # the server parse it). A prefix-scoped key passes here, since it may delete inside
    # its prefix; each key outside it is refused on its own below.
    await authorize(req.storage, req.caller, "delete", req.bucket, req.caller.prefix)
    if not checksums.expected_from_headers(req.lower_headers) and not req.header("x-amz-trailer"):
        # S3 insists on an integrity check of this body (Content-MD5 or a checksum).
        raise InvalidRequest("Missing required header for this request: Content-MD5")
    await req.storage.buckets.get(req.bucket)
    request = xml.parse_delete_objects(await xml.read_capped(req.body()))
    storage, caller = req.storage, req.caller
    bypass = await governance_bypass(req)
    deleted: list[Node] = []
    errors: list[Node] = []
    for item in request.objects:
        marker: str | None = None
        try:
            if not caller.allows("delete", req.bucket, item.key):
                raise AccessDenied(f"this key may not delete {req.bucket}/{item.key}")
            if item.version_id is not None:
                gone = await storage.objects.delete_key_version(
                    req.bucket, item.key, item.version_id, bypass_governance=bypass
                )
            else:
                gone, marker = await delete_latest(storage, req.bucket, item.key)
            await req.audit("delete", bucket=req.bucket, key=item.key, file_id=gone.file_id)
        except (NoSuchKey, NoSuchVersion):
            pass  # S3 reports a key (or version) that was not there as deleted
        except StorageError as exc:
            errors.append(
                (
                    "Error",
                    [
                        ("Key", item.key),
                        ("VersionId", item.version_id),
                        ("Code", s3_code(exc)[0]),
                        ("Message", exc.message if exc.status < 500 else exc.default_message),
                    ],
                )
            )
            continue
        if not request.quiet:
            shown: list[Node] = [("Key", item.key), ("VersionId", item.version_id)]
            if marker is not None:
                shown += [("DeleteMarker", True), ("DeleteMarkerVersionId", marker)]
            deleted.append(("Deleted", shown))
    return xml_response("DeleteResult", [*deleted, *errors])
