"""Tokens, presigned URLs and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tfstorage.api.audit import audit
from tfstorage.api.deps import CallerDep, StorageDep, authorize
from tfstorage.api.schemas import (
    AuditPage,
    AuditRecord,
    PresignRequest,
    PresignResponse,
    StoredText,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    iso,
)
from tfstorage.domain.names import validate_bucket_name

router = APIRouter(prefix="/api/v1", tags=["access"])


@router.post("/tokens", status_code=201, response_model=TokenCreated)
async def create_token(
    body: TokenCreate, request: Request, storage: StorageDep, caller: CallerDep
) -> JSONResponse:
    """Create a token (admin). The secret is in the answer, and nowhere else, ever."""
    await authorize(storage, caller, "admin")
    issued = await storage.access.create_token(
        name=body.name,
        owner=body.owner or caller.name,
        scopes=body.scopes,
        buckets=body.buckets,
        prefix=body.prefix,
        expires_in=body.expires_in,
        s3=body.s3,
    )
    await audit(request, storage, caller, "create_token", token=issued.token.id)
    info = TokenInfo.of(issued.token).model_dump()
    s3 = issued.s3
    created = TokenCreated(
        **info,
        token=issued.secret,
        access_key_id=s3.access_key_id if s3 else None,
        secret_access_key=s3.secret_access_key if s3 else None,
    )
    return JSONResponse(created.model_dump(exclude_none=not s3), status_code=201)


@router.get("/tokens")
async def list_tokens(storage: StorageDep, caller: CallerDep) -> TokenList:
    """Every token (admin), without secrets."""
    await authorize(storage, caller, "admin")
    return TokenList(tokens=[TokenInfo.of(t) for t in await storage.access.list_tokens()])


@router.delete("/tokens/{token_id}")
async def revoke_token(
    token_id: str, request: Request, storage: StorageDep, caller: CallerDep
) -> TokenInfo:
    """Revoke a token (admin): it, and every URL it presigned, stop working at once."""
    await authorize(storage, caller, "admin")
    token = await storage.access.revoke_token(token_id[:64])
    await audit(request, storage, caller, "revoke_token", token=token.id)
    return TokenInfo.of(token)


@router.post("/presign")
async def presign(
    body: PresignRequest, request: Request, storage: StorageDep, caller: CallerDep
) -> PresignResponse:
    """A URL that lets anyone holding it GET or PUT one object until it expires (at most
    7 days); signed for this token, so revoking the token kills the URL."""
    scope = "read" if body.method == "GET" else "write"
    await authorize(storage, caller, scope, body.bucket, body.key)
    signed = await storage.access.presign(
        caller,
        method=body.method,
        bucket=body.bucket,
        key=body.key,
        expires_in=body.expires_in,
        max_size=body.max_size,
    )
    # The address clients use (PUBLIC_URL, else this request's as a trusted proxy
    # forwarded it), never this instance's own: behind a load balancer that is unreachable.
    base = storage.settings.public_url or str(request.base_url).rstrip("/")
    await audit(
        request, storage, caller, "presign", bucket=body.bucket, key=body.key, method=body.method
    )
    return PresignResponse(
        url=base + signed.url, expires_at=iso(signed.expires_at), method=body.method
    )


@router.post("/presign/rotate-key")
async def rotate_presign_key(
    request: Request, storage: StorageDep, caller: CallerDep
) -> dict[str, bool]:
    """Replace the presigned URLs' signing key (admin): every link issued so far stops
    working, on every instance within a few seconds. For a key that may have leaked."""
    await authorize(storage, caller, "admin")
    await storage.access.rotate_signing_key()
    await audit(request, storage, caller, "rotate_presign_key")
    return {"rotated": True}


@router.get("/audit")
async def audit_log(
    storage: StorageDep,
    caller: CallerDep,
    bucket: Annotated[StoredText | None, Query(max_length=63)] = None,
    since: datetime | None = None,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="entries after this id (paging)")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Who did what to which object, when and from where (admin); oldest first."""
    await authorize(storage, caller, "admin")
    if bucket is not None:
        validate_bucket_name(bucket)
    entries = await storage.access.audit_entries(
        bucket=bucket, since=since, after_id=after, limit=limit
    )
    next_after = entries[-1].id if len(entries) == limit else None
    return AuditPage(entries=[AuditRecord.of(e) for e in entries], next_after=next_after)
