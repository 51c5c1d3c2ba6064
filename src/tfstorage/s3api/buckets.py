"""Service and bucket operations: ListBuckets, Create/Delete/HeadBucket, location, versioning."""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.errors import AccessDenied, BucketAlreadyExists
from tfstorage.s3api import acl, xml
from tfstorage.s3api.errors import xml_text
from tfstorage.s3api.object_lock import enable_lock_on_create
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import S3_NAMESPACE, iso_time, xml_response
from tfstorage.service.authorization import authorize


def owner(req: S3Request) -> list[tuple[str, str]]:
    return [("ID", req.caller.token_id or req.caller.name), ("DisplayName", req.caller.name)]


async def list_buckets(req: S3Request) -> Response:
    caller = req.caller
    if caller.anonymous:
        raise AccessDenied("listing buckets needs a signed request")
    # A key confined to some buckets sees those: S3 tools list buckets to find theirs.
    listed = [b for b in await req.storage.buckets.list() if caller.covers_bucket(b.name)]
    return xml_response(
        "ListAllMyBucketsResult",
        [
            ("Owner", owner(req)),
            (
                "Buckets",
                [
                    ("Bucket", [("Name", b.name), ("CreationDate", iso_time(b.created_at))])
                    for b in listed
                ],
            ),
        ],
    )


async def create_bucket(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "admin", req.bucket)
    # The body, if any, only names a location; it is read (capped) and checked for form.
    body = await xml.read_capped(req.body())
    if body.strip():
        xml.parse(body, root="CreateBucketConfiguration")
    public_read = acl.bucket_public_read(req)
    # S3 buckets start unversioned, never configured: this project's versioning=False
    # (an overwrite replaces the "null" version), until PutBucketVersioning turns it on.
    try:
        await req.storage.buckets.create(
            req.bucket, versioning=False, public_read=bool(public_read), versioning_set=False
        )
    except BucketAlreadyExists:
        # Re-creating a bucket one may administer, as it is, answers 200 (us-east-1, and
        # Ceph's rule): one asking for another ACL than the bucket's is still a conflict.
        if (await req.storage.buckets.get(req.bucket)).public_read != bool(public_read):
            raise
        return Response(status_code=200, headers={"Location": f"/{req.bucket}"})
    await req.audit("create_bucket", bucket=req.bucket)
    await enable_lock_on_create(req)
    return Response(status_code=200, headers={"Location": f"/{req.bucket}"})


async def delete_bucket(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "admin", req.bucket)
    await req.storage.buckets.delete(req.bucket, force=False)
    await req.audit("delete_bucket", bucket=req.bucket)
    return Response(status_code=204)


async def head_bucket(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "read", req.bucket, req.caller.prefix or None)
    await req.storage.buckets.get(req.bucket)
    region = req.storage.settings.s3_region
    return Response(status_code=200, headers={"x-amz-bucket-region": region})


async def get_bucket_location(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "read", req.bucket, req.caller.prefix or None)
    await req.storage.buckets.get(req.bucket)
    region = req.storage.settings.s3_region
    # S3 answers an empty constraint for us-east-1, and clients expect exactly that.
    text = "" if region == "us-east-1" else xml_text(region)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<LocationConstraint xmlns="{S3_NAMESPACE}">{text}</LocationConstraint>'
    )
    return Response(body.encode(), media_type="application/xml")


async def get_bucket_versioning(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "read", req.bucket, req.caller.prefix or None)
    bucket = await req.storage.buckets.get(req.bucket)
    status = "Enabled" if bucket.versioning else "Suspended" if bucket.versioning_set else None
    return xml_response("VersioningConfiguration", [("Status", status)])


async def put_bucket_versioning(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "admin", req.bucket)
    enabled = xml.parse_versioning(await xml.read_capped(req.body()))
    if enabled is not None:
        await req.storage.buckets.update(req.bucket, versioning=enabled)
        await req.audit("update_bucket", bucket=req.bucket, versioning=enabled)
    else:
        await req.storage.buckets.get(req.bucket)
    return Response(status_code=200)
