"""Turn write results into the upload response shapes."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from tfstorage.api.audit import audit_many
from tfstorage.api.schemas import FileInfo, UploadResult
from tfstorage.domain.caller import Caller
from tfstorage.service.storage import Storage
from tfstorage.service.writes import WriteResult


def upload_result(result: WriteResult) -> UploadResult:
    return UploadResult(**FileInfo.fields_of(result.version), deduplicated=result.deduplicated)


def upload_response(results: list[WriteResult]) -> dict[str, Any]:
    """UploadResponse's fields; each file validated once (every small PUT pays this)."""
    files = [upload_result(r).model_dump() for r in results]
    message = "File uploaded successfully" if len(files) == 1 else f"{len(files)} files uploaded"
    body = {"success": True, "message": message, "count": len(files), "files": files}
    if len(files) == 1:
        # The original service answered a single upload with the object's fields.
        body = {**files[0], **body}
    return body


async def audit_uploads(
    request: Request, storage: Storage, caller: Caller, results: list[WriteResult]
) -> None:
    entries = [
        {"bucket": v.bucket, "key": v.key, "file_id": v.file_id, "size": v.size}
        for v in (r.version for r in results)
    ]
    await audit_many(request, storage, caller, "upload", entries)
