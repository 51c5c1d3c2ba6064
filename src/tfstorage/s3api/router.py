"""Which operation a request is: S3's rules, by method, bucket, key and subresource."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.responses import Response

from tfstorage.s3api import (
    acl,
    attributes,
    buckets,
    listing,
    multi_delete,
    multipart,
    objects,
    post_object,
    tagging,
    versions,
)
from tfstorage.s3api.config_routes import config_operation
from tfstorage.s3api.errors import MethodNotAllowed, NotImplementedOperation
from tfstorage.s3api.request import S3Request

Operation = Callable[[S3Request], Awaitable[Response]]

# Subresources of S3 this endpoint does not serve yet: 501, never a wrong answer (a
# GET ?acl must not be taken for a listing or a download).
_UNSERVED = frozenset(
    {
        "accelerate", "analytics", "encryption",
        "intelligent-tiering", "inventory", "lifecycle", "logging",
        "metrics", "notification", "ownershipControls", "policy",
        "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore",
        "select", "torrent", "website",
    }
)  # fmt: skip
_BUCKET_SUBRESOURCES = frozenset({"acl", "location", "versioning", "versions", "delete", "uploads"})


def route(req: S3Request) -> Operation:
    query, method = req.query, req.method
    unserved = _UNSERVED.intersection(query)
    if unserved:
        raise NotImplementedOperation(f"?{sorted(unserved)[0]} is not implemented yet")
    if not req.bucket:
        if method == "GET":
            return buckets.list_buckets
        raise MethodNotAllowed()
    configured = config_operation(req) if req.bucket else None
    if configured is not None:
        return configured
    if not req.key:
        return _bucket_operation(req)
    if "uploads" in query or "uploadId" in query:
        return _multipart_operation(req)
    if "attributes" in query:
        by_method: dict[str, Operation] = {"GET": attributes.get_object_attributes}
    elif "acl" in query:
        by_method = {"GET": acl.get_object_acl, "PUT": acl.put_object_acl}
    elif "tagging" in query:
        by_method = {
            "GET": tagging.get_object_tagging,
            "PUT": tagging.put_object_tagging,
            "DELETE": tagging.delete_object_tagging,
        }
    elif method == "PUT" and req.header("x-amz-copy-source") is not None:
        return objects.copy_object
    else:
        by_method = {
            "PUT": objects.put_object,
            "GET": objects.get_object,
            "HEAD": objects.get_object,
            "DELETE": objects.delete_object,
        }
    if method not in by_method:
        raise MethodNotAllowed()
    return by_method[method]


def _bucket_operation(req: S3Request) -> Operation:
    query, method = req.query, req.method
    if "versioning" in query and method == "PUT":
        return buckets.put_bucket_versioning
    if "acl" in query and method in ("GET", "PUT"):
        return acl.get_bucket_acl if method == "GET" else acl.put_bucket_acl
    if method == "GET":
        if "uploads" in query:
            return multipart.list_multipart_uploads
        if "location" in query:
            return buckets.get_bucket_location
        if "versioning" in query:
            return buckets.get_bucket_versioning
        if "versions" in query:
            return versions.list_object_versions
        if query.get("list-type") == "2":
            return listing.list_objects_v2
        return listing.list_objects_v1
    if method == "POST" and "delete" in query:
        return multi_delete.delete_objects
    if method == "POST" and not query:
        return post_object.post_object  # a browser form's upload
    if _BUCKET_SUBRESOURCES.intersection(query):
        raise MethodNotAllowed()  # never taken for a plain bucket request (DELETE ?location)
    simple: dict[str, Operation] = {
        "PUT": buckets.create_bucket,
        "DELETE": buckets.delete_bucket,
        "HEAD": buckets.head_bucket,
    }
    if method not in simple:
        raise MethodNotAllowed()
    return simple[method]


def _multipart_operation(req: S3Request) -> Operation:
    method = req.method
    if "uploads" in req.query:
        if method != "POST":
            raise MethodNotAllowed()
        return multipart.create_multipart_upload
    if method == "PUT" and req.header("x-amz-copy-source") is not None:
        return multipart.upload_part_copy
    by_method: dict[str, Operation] = {
        "PUT": multipart.upload_part,
        "POST": multipart.complete_multipart_upload,
        "DELETE": multipart.abort_multipart_upload,
        "GET": multipart.list_parts,
    }
    if method not in by_method:
        raise MethodNotAllowed()
    return by_method[method]
