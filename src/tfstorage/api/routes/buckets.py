"""Buckets: list, create, inspect, change settings, delete, list files."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from tfstorage.api.audit import audit
from tfstorage.api.deps import CallerDep, StorageDep, authorize
from tfstorage.api.routes.objects import Limit, list_objects
from tfstorage.api.schemas import (
    BucketCreate,
    BucketDeleted,
    BucketInfo,
    BucketList,
    BucketUpdate,
    ListResponse,
    StoredText,
)
from tfstorage.domain.caller import Caller
from tfstorage.domain.records import Bucket

router = APIRouter(prefix="/api/v1/buckets", tags=["buckets"])


def _visible(caller: Caller, bucket: Bucket) -> bool:
    if caller.grant is not None:  # a presigned URL names one object, nothing more
        return False
    return bucket.public_read or caller.allows("read", bucket.name, caller.prefix or None)


@router.get("")
async def list_buckets(storage: StorageDep, caller: CallerDep) -> BucketList:
    """The buckets this caller may read (or that are public), with counts and sizes."""
    buckets = [b for b in await storage.buckets.list() if _visible(caller, b)]
    if caller.anonymous and not buckets:
        await authorize(storage, caller, "read")  # 401: nothing is public
    usage = await storage.buckets.usage()
    return BucketList(buckets=[BucketInfo.of(b, usage.get(b.name)) for b in buckets])


@router.post("", status_code=201, response_model=BucketInfo)
async def create_bucket(
    body: BucketCreate, request: Request, storage: StorageDep, caller: CallerDep
) -> JSONResponse:
    """Create a bucket (S3 naming rules; 409 BucketAlreadyExists). Needs `admin`."""
    await authorize(storage, caller, "admin", body.name)
    bucket = await storage.buckets.create(
        body.name,
        versioning=body.versioning,
        allowed_types=body.allowed_types,
        quota_bytes=body.quota_bytes,
        quota_objects=body.quota_objects,
        description=body.description,
        public_read=body.public_read,
    )
    await audit(request, storage, caller, "create_bucket", bucket=bucket.name)
    info = BucketInfo.of(bucket, None)
    return JSONResponse(info.model_dump(), status_code=201)


@router.get("/{name}")
async def get_bucket(name: str, storage: StorageDep, caller: CallerDep) -> BucketInfo:
    """A bucket's settings, object count and size."""
    await authorize(storage, caller, "read", name, caller.prefix or None)
    bucket = await storage.buckets.get(name)
    usage = await storage.buckets.usage()
    return BucketInfo.of(bucket, usage.get(name))


@router.put("/{name}")
async def update_bucket(
    name: str, body: BucketUpdate, request: Request, storage: StorageDep, caller: CallerDep
) -> BucketInfo:
    """Change a bucket's settings; only the fields sent change. Needs `admin`."""
    await authorize(storage, caller, "admin", name)
    changes = body.model_dump(exclude_unset=True)
    bucket = await storage.buckets.update(name, **changes)
    await audit(request, storage, caller, "update_bucket", bucket=name, changes=sorted(changes))
    usage = await storage.buckets.usage()
    return BucketInfo.of(bucket, usage.get(name))


@router.delete("/{name}")
async def delete_bucket(
    name: str,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    force: Annotated[bool, Query(description="delete even if it holds objects")] = False,
) -> BucketDeleted:
    """Delete a bucket; 409 BucketNotEmpty unless it is empty or `force=true`."""
    await authorize(storage, caller, "admin", name)
    await storage.buckets.delete(name, force=force)
    await audit(request, storage, caller, "delete_bucket", bucket=name, force=force)
    return BucketDeleted(message="Bucket deleted successfully", bucket=name)


@router.get("/{name}/files")
async def list_bucket_files(
    name: str,
    storage: StorageDep,
    caller: CallerDep,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    delimiter: Annotated[str, Query(max_length=1)] = "",
    marker: Annotated[StoredText, Query(max_length=1024)] = "",
    limit: Limit = None,
) -> ListResponse:
    """The same listing as `/api/v1/list/{bucket}`."""
    return await list_objects(name, storage, caller, prefix, delimiter, marker, limit)
