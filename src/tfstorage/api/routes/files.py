"""Files by id (`file_id` names one immutable version) and search by metadata."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from tfstorage.api.audit import audit
from tfstorage.api.conditions import refuse_condition
from tfstorage.api.deps import CallerDep, StorageDep, authorize, visible_version
from tfstorage.api.download import object_response
from tfstorage.api.errors import request_id
from tfstorage.api.routes.openapi import binary_response, multipart_body
from tfstorage.api.routes.shaping import audit_uploads, upload_response, upload_result
from tfstorage.api.schemas import (
    MAX_INT,
    DeleteResponse,
    FileInfo,
    FileSearchResponse,
    FileUpdate,
    StoredText,
)
from tfstorage.api.upload_batch import FileOutcome, receive_files
from tfstorage.domain.metadata import parse_tag, parse_tags
from tfstorage.domain.records import FileQuery
from tfstorage.errors import InvalidArgument
from tfstorage.service.writes import WriteResult

router = APIRouter(prefix="/api/v1/files", tags=["files"])


@router.post(
    "/upload",
    status_code=201,
    openapi_extra=multipart_body(many=True),
    responses={207: {"description": "Some files were stored, some refused: see `results`."}},
)
async def upload_files(request: Request, storage: StorageDep, caller: CallerDep) -> JSONResponse:
    """Upload one or many files (`file` parts) with `bucket`, `key`/`prefix`, `metadata`,
    `tags`; each file's `Content-MD5` / `X-Checksum-SHA256` part header is verified.

    Each file stands on its own: `results` says, in form order, which were stored (201)
    and why the others were refused; 207 when some were. `atomic=true` (a field or the
    query) makes it all or nothing. `If-Match` / `If-None-Match` apply to each file."""
    outcomes = await receive_files(
        request, storage, caller, default_bucket=storage.settings.default_bucket
    )
    stored = [o.result for o in outcomes if o.result is not None]
    await audit_uploads(request, storage, caller, stored)
    return _per_file_response(request, outcomes, stored)


def _per_file_response(
    request: Request, outcomes: list[FileOutcome], stored: list[WriteResult]
) -> JSONResponse:
    results = [
        {
            "filename": o.filename,
            "key": o.key,
            "status": 201 if o.error is None else o.error.status,
            "file": upload_result(o.result).model_dump() if o.result is not None else None,
            "error": None if o.error is None else {"error": o.error.message, "code": o.error.code},
        }
        for o in outcomes
    ]
    failed = [o.error for o in outcomes if o.error is not None]
    if stored:
        body = upload_response(stored)
        if failed:
            body["success"] = False
            body["message"] = f"{len(stored)} of {len(outcomes)} files uploaded"
    else:
        body = {"success": False, "message": "no file uploaded", "count": 0, "files": []}
    body |= {"results": results, "succeeded": len(stored), "failed": len(failed)}
    if stored:
        return JSONResponse(body, status_code=207 if failed else 201)
    # Nothing stored: the answer is the first refusal, as an error body (clients of the
    # all-or-nothing upload see the status and code they always did).
    first = failed[0]
    error = {"error": first.message, "code": first.code, "request_id": request_id(request)}
    return JSONResponse(error | body, status_code=first.status, headers=first.headers)


@router.get("")
async def search_files(
    storage: StorageDep,
    caller: CallerDep,
    bucket: Annotated[str | None, Query(max_length=63)] = None,
    prefix: Annotated[str | None, Query(max_length=1024)] = None,
    tag: Annotated[list[str] | None, Query(description="k=v; repeat to AND")] = None,
    content_type: Annotated[StoredText | None, Query(max_length=255)] = None,
    min_size: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    max_size: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    marker: Annotated[StoredText | None, Query(max_length=64)] = None,
    limit: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
) -> FileSearchResponse:
    """Search latest versions by bucket, prefix, tags, content type, size and date."""
    # Without a bucket the search spans every bucket, which needs a `*` token.
    await authorize(storage, caller, "read", bucket, prefix or "" if bucket else None)
    tags = tuple(parse_tag(t) for t in tag or [])
    if len(tags) > 50:
        raise InvalidArgument("at most 50 tag filters")
    cap = storage.settings.max_listing_limit
    page = await storage.objects.search(
        FileQuery(
            bucket=bucket,
            prefix=prefix,
            tags=tags,
            content_type=content_type,
            min_size=min_size,
            max_size=max_size,
            created_after=created_after,
            created_before=created_before,
            marker=marker,
            limit=min(limit or cap, cap),
        )
    )
    return FileSearchResponse(
        files=[FileInfo.of(v) for v in page.files],
        truncated=page.truncated,
        next_marker=page.next_marker,
    )


@router.get(
    "/download/{file_id}",
    response_class=Response,
    responses=binary_response("The version's bytes, as an attachment."),
    operation_id="download_file",
)
@router.head("/download/{file_id}", response_class=Response, operation_id="head_file")
async def download_file(
    file_id: str, request: Request, storage: StorageDep, caller: CallerDep
) -> Response:
    """Download one version by id (its bytes never change)."""
    version = await visible_version(storage, caller, file_id, "read")
    return await object_response(request, storage, version)


@router.get("/{file_id}")
async def get_file(file_id: str, storage: StorageDep, caller: CallerDep) -> FileInfo:
    """Metadata of one version."""
    return FileInfo.of(await visible_version(storage, caller, file_id, "read"))


@router.put("/{file_id}")
async def update_file(
    file_id: str, update: FileUpdate, request: Request, storage: StorageDep, caller: CallerDep
) -> FileInfo:
    """Replace a version's user metadata, tags or content type (the bytes never change)."""
    await visible_version(storage, caller, file_id, "write")
    refuse_condition(request, "on a version's metadata (the file id already names it)")
    version = await storage.objects.update(
        file_id,
        metadata=update.metadata,
        tags=parse_tags(update.tags) if update.tags is not None else None,
        content_type=update.content_type,
    )
    await audit(
        request, storage, caller, "update", bucket=version.bucket, key=version.key, file_id=file_id
    )
    return FileInfo.of(version)


@router.delete("/{file_id}")
async def delete_file(
    file_id: str, request: Request, storage: StorageDep, caller: CallerDep
) -> DeleteResponse:
    """Delete this version permanently; if it was the latest, the previous one is."""
    await visible_version(storage, caller, file_id, "delete")
    refuse_condition(request, "on a version by id (the file id already names it)")
    gone = await storage.objects.delete_version(file_id)
    await audit(
        request,
        storage,
        caller,
        "delete_version",
        bucket=gone.bucket,
        key=gone.key,
        file_id=file_id,
    )
    return DeleteResponse(
        message="File deleted successfully", bucket=gone.bucket, key=gone.key, file_id=file_id
    )
