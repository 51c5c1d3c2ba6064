"""Objects by path: upload, download, list, delete, versions, restore."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from tfstorage.api.audit import audit
from tfstorage.api.conditions import refuse_condition, write_condition
from tfstorage.api.deps import (
    BEARER_ONLY,
    CallerDep,
    StorageDep,
    authorize,
    storage_and_caller,
)
from tfstorage.api.download import object_response
from tfstorage.api.routes.openapi import RAW_BODY, binary_response, multipart_body
from tfstorage.api.routes.shaping import audit_uploads, upload_response
from tfstorage.api.schemas import (
    MAX_INT,
    DeleteResponse,
    FileInfo,
    ListedObject,
    ListResponse,
    StoredText,
    VersionsResponse,
)
from tfstorage.api.uploads import put_raw, receive_form

router = APIRouter(prefix="/api/v1", tags=["objects"])

Limit = Annotated[
    int | None, Query(ge=1, le=MAX_INT, description="at most this many entries (capped)")
]
VersionId = Annotated[StoredText | None, Query(max_length=64)]


@router.post("/upload", openapi_extra=multipart_body(many=False))
async def upload(request: Request, storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """Upload one file (multipart `file`, `bucket`, `key`) into a bucket; `If-Match` /
    `If-None-Match` are judged when it commits (412)."""
    results = await receive_form(
        request, storage, caller, default_bucket=storage.settings.default_bucket, max_files=1
    )
    await audit_uploads(request, storage, caller, results)
    return upload_response(results)


@router.post("/upload/stream", openapi_extra=multipart_body(many=False))
async def upload_stream(request: Request, storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """Upload one large file; the form is streamed to storage in bounded memory."""
    return await upload(request, storage, caller)


@router.put("/objects/{bucket}/{key:objkey}", openapi_extra=RAW_BODY | BEARER_ONLY)
async def put_object(bucket: str, key: str, request: Request) -> dict[str, Any]:
    """Store the raw request body as a new version of `bucket/key` (the fast path).
    `If-None-Match: *` creates only if absent, `If-Match` replaces only that ETag (412)."""
    storage, caller = await storage_and_caller(request)
    await authorize(storage, caller, "write", bucket, key)
    result = await put_raw(request, storage, caller, bucket, key)
    await audit_uploads(request, storage, caller, [result])
    return upload_response([result])


@router.get(
    "/download/{bucket}/{key:objkey}",
    response_class=Response,
    responses=binary_response("The object's bytes, as an attachment."),
    operation_id="download_object",
    openapi_extra=BEARER_ONLY,
)
@router.head(
    "/download/{bucket}/{key:objkey}",
    response_class=Response,
    operation_id="head_object",
    openapi_extra=BEARER_ONLY,
)
async def download(
    bucket: str, key: str, request: Request, version_id: VersionId = None
) -> Response:
    """Download the latest version of a key (or `version_id`); Range and conditionals."""
    storage, caller = await storage_and_caller(request)
    await authorize(storage, caller, "read", bucket, key)
    version = await storage.reader.resolve(bucket, key, version_id)
    return await object_response(request, storage, version)


# Called directly, without FastAPI's routing, when no query string comes with them
# (api/hot_routes.py): they take the request and path parameters only.
HOT_ENDPOINTS = (put_object, download)


@router.get("/list/{bucket}")
async def list_objects(
    bucket: str,
    storage: StorageDep,
    caller: CallerDep,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    delimiter: Annotated[str, Query(max_length=1)] = "",
    marker: Annotated[StoredText, Query(max_length=1024)] = "",
    limit: Limit = None,
) -> ListResponse:
    """Keys of a bucket in byte order, paged by `marker`; `delimiter` groups prefixes."""
    await authorize(storage, caller, "read", bucket, prefix)
    listing = await storage.objects.list_entries(
        bucket, prefix=prefix, delimiter=delimiter, marker=marker, limit=limit
    )
    return ListResponse(
        bucket=bucket,
        prefix=prefix,
        delimiter=delimiter,
        objects=[ListedObject.of(v) for v in listing.objects],
        common_prefixes=listing.common_prefixes,
        truncated=listing.truncated,
        next_marker=listing.next_marker,
    )


@router.delete("/delete/{bucket}/{key:objkey}")
async def delete_object(
    bucket: str,
    key: str,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    version_id: VersionId = None,
) -> DeleteResponse:
    """Delete a key (restorable for RETENTION_DAYS), or one version for good.
    `If-Match`: only while the latest version has that ETag (412 otherwise)."""
    await authorize(storage, caller, "delete", bucket, key)
    if version_id is not None:
        # A version id already names exactly what goes; an ETag adds nothing.
        refuse_condition(request, "with version_id")
        gone = await storage.objects.delete_key_version(bucket, key, version_id)
        message = "Version deleted permanently"
    else:
        condition = write_condition(request)
        gone = await storage.objects.delete_key(bucket, key, condition=condition)
        message = "File deleted successfully"
    action = "delete_version" if version_id is not None else "delete"
    await audit(request, storage, caller, action, bucket=bucket, key=key, file_id=gone.file_id)
    return DeleteResponse(message=message, bucket=bucket, key=key, file_id=gone.file_id)


@router.get("/versions/{bucket}/{key:objkey}")
async def list_versions(
    bucket: str, key: str, storage: StorageDep, caller: CallerDep
) -> VersionsResponse:
    """Every version of a key, newest first (including those of a deleted key)."""
    await authorize(storage, caller, "read", bucket, key)
    versions = await storage.objects.versions(bucket, key)
    return VersionsResponse(bucket=bucket, key=key, versions=[FileInfo.of(v) for v in versions])


@router.post("/restore/{bucket}/{key:objkey}")
async def restore_object(
    bucket: str,
    key: str,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    version_id: VersionId = None,
) -> FileInfo:
    """Undelete a key, or make `version_id` the latest again. `If-Match` /
    `If-None-Match` are judged against the latest before the restore (a key in the
    trash is absent)."""
    await authorize(storage, caller, "write", bucket, key)
    version = await storage.objects.restore(
        bucket,
        key,
        version_id=version_id,
        created_by=caller.name,
        condition=write_condition(request),
    )
    await audit(
        request, storage, caller, "restore", bucket=bucket, key=key, file_id=version.file_id
    )
    return FileInfo.of(version)
