"""Resumable multipart uploads (S3's model): open a session, send parts in any order and
in parallel, look at what arrived (to resume from anywhere), complete or abort."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tfstorage.api.audit import audit
from tfstorage.api.conditions import write_condition
from tfstorage.api.deps import CallerDep, StorageDep, authorize
from tfstorage.api.routes.openapi import RAW_BODY
from tfstorage.api.routes.shaping import audit_uploads, upload_response
from tfstorage.api.schemas import MAX_INT, StoredText, iso
from tfstorage.api.uploads import declared_length, request_body
from tfstorage.domain.caller import Caller
from tfstorage.domain.metadata import parse_tags
from tfstorage.domain.names import validate_bucket_name
from tfstorage.domain.uploads import MAX_PARTS, MIN_PART_SIZE, UploadSession, is_upload_id
from tfstorage.errors import NoSuchUpload
from tfstorage.service.hashing import parse_content_md5, parse_sha256
from tfstorage.service.storage import Storage

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])

UploadId = Annotated[str, Path(max_length=64)]


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(max_length=255)
    key: str = Field(max_length=4096)
    content_type: str | None = Field(default=None, max_length=1024)
    metadata: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    size: int | None = Field(default=None, ge=0, le=MAX_INT, description="total bytes, if known")
    sha256: str | None = Field(default=None, max_length=128, description="of the whole object")
    part_size: int | None = Field(
        default=None,
        ge=0,
        le=MAX_INT,
        description="every part but the last has this size: lets the server write parts"
        " in place (no copy at completion)",
    )


class PartReference(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(max_length=128)


class CompleteUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: list[PartReference] = Field(max_length=MAX_PARTS)
    sha256: str | None = Field(default=None, max_length=128)


def session_body(storage: Storage, session: UploadSession, *, parts: bool) -> dict[str, Any]:
    ttl = timedelta(seconds=storage.settings.upload_session_ttl_seconds)
    body: dict[str, Any] = {
        "upload_id": session.upload_id,
        "bucket": session.bucket,
        "key": session.key,
        "content_type": session.content_type,
        "metadata": session.metadata,
        "tags": session.tags,
        "size": session.declared_size,
        "sha256": session.declared_sha256,
        "part_size": session.part_size,
        "created_at": iso(session.created_at),
        "created_by": session.created_by,
        "expires_at": iso(session.touched_at + ttl),
        "min_part_size": MIN_PART_SIZE,
        "max_part_size": storage.uploads.part_limit(),
        "max_parts": MAX_PARTS,
        "stored_bytes": session.stored_bytes,
    }
    if parts:
        body["parts"] = [
            {"part_number": p.part_number, "size": p.size, "etag": p.md5, "sha256": p.sha256}
            for p in session.parts
        ]
    return body


async def session_for(storage: Storage, caller: Caller, upload_id: str) -> UploadSession:
    """The session, if this caller may write its object. A caller with no write right at
    all is refused before the lookup, so that ids reveal nothing."""
    if caller.grant is not None or not caller.scopes & {"write", "admin"}:
        await authorize(storage, caller, "write", None)
    if not is_upload_id(upload_id):
        raise NoSuchUpload(upload_id)
    session = await storage.uploads.get(upload_id)
    await authorize(storage, caller, "write", session.bucket, session.key)
    return session


@router.post("", status_code=201)
async def create_upload(
    body: CreateUploadRequest, storage: StorageDep, caller: CallerDep
) -> dict[str, Any]:
    """Open a resumable upload of `bucket/key`; checked as a single upload would be."""
    await authorize(storage, caller, "write", body.bucket, body.key)
    session = await storage.uploads.create(
        body.bucket,
        body.key,
        content_type=body.content_type,
        metadata=body.metadata or {},
        tags=parse_tags(body.tags or {}),
        size=body.size,
        sha256=body.sha256,
        created_by=caller.name,
        max_size=caller.max_upload,
        part_size=body.part_size,
    )
    return session_body(storage, session, parts=True)


@router.get("")
async def list_uploads(
    storage: StorageDep,
    caller: CallerDep,
    bucket: Annotated[StoredText | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    """Open sessions (without their parts) the caller may write to, oldest first."""
    if bucket is not None:
        validate_bucket_name(bucket)
        await authorize(storage, caller, "write", bucket, caller.prefix)
    elif caller.grant is not None or not caller.scopes & {"write", "admin"}:
        await authorize(storage, caller, "write", None)
    sessions = await storage.uploads.list(bucket)
    visible = [s for s in sessions if caller.allows("write", s.bucket, s.key)]
    return {"uploads": [session_body(storage, s, parts=False) for s in visible]}


@router.get("/{upload_id}")
async def get_upload(upload_id: UploadId, storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """The session and the parts stored so far: what a client needs to resume."""
    session = await session_for(storage, caller, upload_id)
    return session_body(storage, session, parts=True)


@router.put("/{upload_id}/parts/{part_number}", openapi_extra=RAW_BODY)
async def put_part(
    upload_id: UploadId,
    part_number: Annotated[int, Path(ge=1, le=MAX_PARTS)],
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
) -> dict[str, Any]:
    """Store the raw body as part `part_number` (replacing an earlier one); optional
    `Content-MD5` and `X-Checksum-SHA256` are verified."""
    session = await session_for(storage, caller, upload_id)
    h = request.headers
    part = await storage.uploads.put_part(
        session,
        part_number,
        request_body(request),
        length=declared_length(request),
        md5=parse_content_md5(h.get("content-md5")),
        sha256=parse_sha256(h.get("x-checksum-sha256")),
        max_size=caller.max_upload,
    )
    return {
        "part_number": part.part_number,
        "size": part.size,
        "etag": part.md5,
        "sha256": part.sha256,
    }


@router.post("/{upload_id}/complete")
async def complete_upload(
    upload_id: UploadId,
    body: CompleteUploadRequest,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
) -> dict[str, Any]:
    """Assemble the listed parts into the object and make it visible atomically; the
    answer is that of a single upload (`PUT /api/v1/objects/...`). `If-Match` /
    `If-None-Match` on this request are the object's preconditions; a 412 leaves the
    session open (complete again, or abort it). On an S3 engine a completion refused
    after its parts were assembled (a racing writer won) used the parts up: the answer
    says so, and they must be uploaded again."""
    session = await session_for(storage, caller, upload_id)
    condition = write_condition(request)
    result = await storage.uploads.complete(
        session.upload_id,
        [(p.part_number, p.etag) for p in body.parts],
        sha256=body.sha256,
        created_by=caller.name,
        condition=condition,
    )
    await audit_uploads(request, storage, caller, [result])
    return upload_response([result])


@router.delete("/{upload_id}", status_code=204, response_class=Response)
async def abort_upload(
    upload_id: UploadId, request: Request, storage: StorageDep, caller: CallerDep
) -> Response:
    """Abort the session; its parts are removed."""
    session = await session_for(storage, caller, upload_id)
    await storage.uploads.abort(session.upload_id)
    await audit(request, storage, caller, "upload_abort", bucket=session.bucket, key=session.key)
    return Response(status_code=204)
