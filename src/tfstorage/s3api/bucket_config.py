"""Bucket configuration: Get/Put/DeleteBucketTagging, Get/Put/DeleteBucketCors,
Get/PutObjectLockConfiguration. Reading needs `read` on the bucket, changing `admin`."""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.domain.cors import validate_rules
from tfstorage.s3api import xml
from tfstorage.s3api.config_xml import parse_cors, parse_object_lock
from tfstorage.s3api.errors import (
    NoSuchCORSConfiguration,
    NoSuchTagSet,
    ObjectLockConfigurationNotFound,
)
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import xml_response
from tfstorage.service.authorization import authorize


async def _may_read(req: S3Request) -> None:
    await authorize(req.storage, req.caller, "read", req.bucket, req.caller.prefix or None)


async def _may_change(req: S3Request) -> None:
    await authorize(req.storage, req.caller, "admin", req.bucket)


async def get_bucket_tagging(req: S3Request) -> Response:
    await _may_read(req)
    tag_set = await req.storage.bucket_config.tags(req.bucket)
    if tag_set is None:
        raise NoSuchTagSet()
    tags = [("Tag", [("Key", k), ("Value", v)]) for k, v in sorted(tag_set.items())]
    return xml_response("Tagging", [("TagSet", tags)])


async def put_bucket_tagging(req: S3Request) -> Response:
    await _may_change(req)
    tag_set = xml.parse_tagging(await xml.read_capped(req.body()))
    await req.storage.bucket_config.set_tags(req.bucket, tag_set)
    await req.audit("update_bucket", bucket=req.bucket, tags=tag_set)
    return Response(status_code=204)


async def delete_bucket_tagging(req: S3Request) -> Response:
    await _may_change(req)
    await req.storage.bucket_config.set_tags(req.bucket, None)
    await req.audit("update_bucket", bucket=req.bucket, tags=None)
    return Response(status_code=204)


async def get_bucket_cors(req: S3Request) -> Response:
    await _may_read(req)
    config = await req.storage.bucket_config.cors(req.bucket)
    if config is None:
        raise NoSuchCORSConfiguration()
    rules = [
        (
            "CORSRule",
            [
                ("ID", rule.id),
                *[("AllowedHeader", h) for h in rule.allowed_headers],
                *[("AllowedMethod", m) for m in rule.allowed_methods],
                *[("AllowedOrigin", o) for o in rule.allowed_origins],
                *[("ExposeHeader", h) for h in rule.expose_headers],
                ("MaxAgeSeconds", rule.max_age_seconds),
            ],
        )
        for rule in config.rules
    ]
    return xml_response("CORSConfiguration", rules)


async def put_bucket_cors(req: S3Request) -> Response:
    await _may_change(req)
    config = validate_rules(parse_cors(await xml.read_capped(req.body())))
    await req.storage.bucket_config.set_cors(req.bucket, config)
    await req.audit("update_bucket", bucket=req.bucket, cors_rules=len(config.rules))
    return Response(status_code=200)


async def delete_bucket_cors(req: S3Request) -> Response:
    await _may_change(req)
    await req.storage.bucket_config.set_cors(req.bucket, None)
    await req.audit("update_bucket", bucket=req.bucket, cors_rules=None)
    return Response(status_code=204)


async def get_object_lock_configuration(req: S3Request) -> Response:
    await _may_read(req)
    config = await req.storage.bucket_config.object_lock(req.bucket)
    if config is None:
        raise ObjectLockConfigurationNotFound()
    rule = config.default
    default = (
        None
        if rule is None
        else [
            ("DefaultRetention", [("Mode", rule.mode), ("Days", rule.days), ("Years", rule.years)])
        ]
    )
    return xml_response(
        "ObjectLockConfiguration", [("ObjectLockEnabled", "Enabled"), ("Rule", default)]
    )


async def put_object_lock_configuration(req: S3Request) -> Response:
    await _may_change(req)
    config = parse_object_lock(await xml.read_capped(req.body()))
    await req.storage.bucket_config.set_object_lock(req.bucket, config)
    await req.audit("update_bucket", bucket=req.bucket, object_lock=config.to_json())
    return Response(status_code=200)
