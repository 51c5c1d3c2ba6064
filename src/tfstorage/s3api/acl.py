"""Canned ACLs, mapped onto the one access setting a bucket has: public_read.

This project grants through tokens, not per-grantee ACLs. What a canned ACL says is
served where the bucket can express it: `private` and `public-read` on a bucket (its
public_read setting), and an object ACL that says what the object's bucket already
grants. Anything else (public-read-write, authenticated-read, x-amz-grant-* headers, an
AccessControlPolicy body, an object readable by a different audience than its bucket)
is answered 501 NotImplemented, never accepted and silently not enforced.
"""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.errors import InvalidArgument
from tfstorage.s3api import xml
from tfstorage.s3api.errors import NotImplementedOperation, xml_text
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import S3_NAMESPACE
from tfstorage.service.authorization import authorize

CANNED = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
        "log-delivery-write",
    }
)
# What an object's canned ACL may say on this project: the bucket's audience, and no
# more. The bucket-owner-* ACLs add the bucket owner's rights, which every key with
# the bucket already has here.
_OBJECT_PRIVATE = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
_ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_GRANT_HEADERS = (
    "x-amz-grant-read",
    "x-amz-grant-write",
    "x-amz-grant-read-acp",
    "x-amz-grant-write-acp",
    "x-amz-grant-full-control",
)


def _canned(req: S3Request) -> str | None:
    if any(req.header(name) is not None for name in _GRANT_HEADERS):
        raise NotImplementedOperation("x-amz-grant-* headers are not supported: use a canned ACL")
    value = req.header("x-amz-acl")
    if value is not None and value not in CANNED:
        raise InvalidArgument(f"{value!r} is not a canned ACL")
    return value


def bucket_public_read(req: S3Request) -> bool | None:
    """The public_read a bucket's canned ACL asks for; None when none is given."""
    value = _canned(req)
    if value is None:
        return None
    if value not in ("private", "public-read"):
        raise NotImplementedOperation(f"the canned ACL {value!r} is not supported on buckets")
    return value == "public-read"


def check_object_acl(req: S3Request, public_read: bool) -> None:
    """Refuse an object ACL that would open or close the object unlike its bucket."""
    value = _canned(req)
    if value is not None:
        check_canned_object_acl(value, public_read)


def check_canned_object_acl(value: str, public_read: bool) -> None:
    """`check_object_acl` for a canned ACL given elsewhere than x-amz-acl (a POST form)."""
    if value not in CANNED:
        raise InvalidArgument(f"{value!r} is not a canned ACL")
    if (value == "public-read") == public_read and (public_read or value in _OBJECT_PRIVATE):
        return
    raise NotImplementedOperation(
        f"the canned ACL {value!r} differs from the bucket's; object ACLs follow the bucket"
    )


def _grant(grantee_type: str, inner: str, permission: str) -> str:
    # The grantee's type is an xsi:type attribute, which responses.py's trees do not carry.
    return (
        f'<Grant><Grantee xmlns:xsi="{_XSI}" xsi:type="{grantee_type}">{inner}</Grantee>'
        f"<Permission>{permission}</Permission></Grant>"
    )


def _policy(req: S3Request, public_read: bool) -> Response:
    owner = (
        f"<ID>{xml_text(req.caller.token_id or req.caller.name)}</ID>"
        f"<DisplayName>{xml_text(req.caller.name)}</DisplayName>"
    )
    grants = _grant("CanonicalUser", owner, "FULL_CONTROL")
    if public_read:
        grants += _grant("Group", f"<URI>{_ALL_USERS}</URI>", "READ")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<AccessControlPolicy xmlns="{S3_NAMESPACE}"><Owner>{owner}</Owner>'
        f"<AccessControlList>{grants}</AccessControlList></AccessControlPolicy>"
    )
    return Response(body.encode(), media_type="application/xml")


async def _no_policy_body(req: S3Request) -> None:
    if (await xml.read_capped(req.body())).strip():
        raise NotImplementedOperation("ACLs in a request body are not supported: use a canned ACL")


async def get_bucket_acl(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "read", req.bucket, req.caller.prefix or None)
    bucket = await req.storage.buckets.get(req.bucket)
    return _policy(req, bucket.public_read)


async def put_bucket_acl(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "admin", req.bucket)
    public_read = bucket_public_read(req)
    await _no_policy_body(req)
    if public_read is None:
        raise InvalidArgument("an x-amz-acl header is required")  # no grants given at all
    await req.storage.buckets.update(req.bucket, public_read=public_read)
    await req.audit("update_bucket", bucket=req.bucket, public_read=public_read)
    return Response(status_code=200)


async def get_object_acl(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "read", req.bucket, req.key)
    bucket = await req.storage.buckets.get(req.bucket)
    version = await req.storage.reader.resolve(req.bucket, req.key, req.query.get("versionId"))
    response = _policy(req, bucket.public_read)
    response.headers["x-amz-version-id"] = version.file_id
    return response


async def put_object_acl(req: S3Request) -> Response:
    await authorize(req.storage, req.caller, "write", req.bucket, req.key)
    bucket = await req.storage.buckets.get(req.bucket)
    version = await req.storage.reader.resolve(req.bucket, req.key, req.query.get("versionId"))
    check_object_acl(req, bucket.public_read)
    await _no_policy_body(req)
    return Response(status_code=200, headers={"x-amz-version-id": version.file_id})
