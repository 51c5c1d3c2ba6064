"""Turn write results into the upload response shapes."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from tfstorage.api.audit import audit_many
from tfstorage.api.schemas import FileInfo, UploadResponse, UploadResult
from tfstorage.domain.caller import Caller
from tfstorage.service.storage import Storage
from tfstorage.service.writes import WriteResult


def upload_result(result: WriteResult) -> UploadResult:
    info = FileInfo.of(result.version).model_dump()
    return UploadResult(**info, deduplicated=result.deduplicated)


def upload_response(results: list[WriteResult]) -> dict[str, Any]:
    files = [upload_result(r) for r in results]
    message = "File uploaded successfully" if len(files) == 1 else f"{len(files)} files uploaded"
    body = UploadResponse(message=message, count=len(files), files=files).model_dump()
    if len(files) == 1:
        # The original service answered a single upload with the object's fields.
        body = {**files[0].model_dump(), **body}
    return body


async def audit_uploads(
    request: Request, storage: Storage, caller: Caller, results: list[WriteResult]
) -> None:
    entries = [
        {"bucket": v.bucket, "key": v.key, "file_id": v.file_id, "size": v.size}
        for v in (r.version for r in results)
    ]
    await audit_many(request, storage, caller, "upload", entries)
