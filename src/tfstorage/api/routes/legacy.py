"""The original service's MinIO-era routes, kept for clients that still call them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from tfstorage.api.deps import CallerDep, StorageDep, authorize
from tfstorage.api.download import object_response
from tfstorage.api.routes.openapi import binary_response, multipart_body
from tfstorage.api.routes.shaping import audit_uploads, upload_response
from tfstorage.api.uploads import receive_form

router = APIRouter(tags=["legacy"])


@router.post("/upload", openapi_extra=multipart_body(many=False))
async def legacy_upload(request: Request, storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """Upload a file into DEFAULT_BUCKET under its filename (or `key`)."""
    default = storage.settings.default_bucket
    # The legacy route never took a bucket: it always wrote to DEFAULT_BUCKET.
    results = await receive_form(
        request, storage, caller, default_bucket=default, max_files=1, allow_bucket=False
    )
    await audit_uploads(request, storage, caller, results)
    return upload_response(results)


@router.get(
    "/download/{filename:objkey}",
    response_class=Response,
    responses=binary_response("The file from DEFAULT_BUCKET."),
    operation_id="download_legacy_file",
)
@router.head(
    "/download/{filename:objkey}", response_class=Response, operation_id="head_legacy_file"
)
async def legacy_download(
    filename: str, request: Request, storage: StorageDep, caller: CallerDep
) -> Response:
    """Download `filename` from DEFAULT_BUCKET."""
    await authorize(storage, caller, "read", storage.settings.default_bucket, filename)
    version = await storage.reader.resolve(storage.settings.default_bucket, filename)
    return await object_response(request, storage, version)
