"""Object lock of versions: Get/PutObjectRetention, Get/PutObjectLegalHold, the
x-amz-object-lock-* headers in (PutObject, CopyObject) and out (GET/HEAD), and
x-amz-bypass-governance-retention. They are the project's retention locks: a REST
client sees the same lock (service/lifecycle, index/locks.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from tfstorage.domain.object_lock import COMPLIANCE, MODES, ObjectLockConfig, VersionLock
from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import InvalidArgument, InvalidRequest
from tfstorage.s3api import xml
from tfstorage.s3api.config_xml import parse_date, parse_legal_hold, parse_retention
from tfstorage.s3api.errors import MalformedXML, NoSuchObjectLockConfiguration
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import iso_time, xml_response
from tfstorage.service.authorization import authorize

_MISSING = "Bucket is missing Object Lock Configuration"


def lock_headers(version: ObjectVersion) -> dict[str, str]:
    headers = {}
    if version.retain_until is not None:
        headers["x-amz-object-lock-mode"] = version.retention_mode or COMPLIANCE
        headers["x-amz-object-lock-retain-until-date"] = iso_time(version.retain_until)
    if version.legal_hold:
        headers["x-amz-object-lock-legal-hold"] = "ON"
    return headers


async def requested_lock(req: S3Request) -> VersionLock | None:
    """The x-amz-object-lock-* headers of a write, checked before any body byte is read."""
    mode = req.header("x-amz-object-lock-mode")
    until_text = req.header("x-amz-object-lock-retain-until-date")
    hold = req.header("x-amz-object-lock-legal-hold")
    if mode is None and until_text is None and hold is None:
        return None
    if mode is not None and mode not in MODES:
        raise InvalidArgument("x-amz-object-lock-mode must be GOVERNANCE or COMPLIANCE")
    if hold is not None and hold not in ("ON", "OFF"):
        raise InvalidArgument("x-amz-object-lock-legal-hold must be ON or OFF")
    until = None
    if until_text is not None:
        try:
            until = parse_date(until_text)
        except MalformedXML:
            raise InvalidArgument("x-amz-object-lock-retain-until-date is not a date") from None
        if until <= datetime.now(UTC):
            raise InvalidArgument("The retain until date must be in the future!")
    lock = VersionLock(mode, until, None if hold is None else hold == "ON")
    if await req.storage.bucket_config.object_lock(req.bucket) is None:
        raise InvalidRequest(_MISSING)
    return lock


async def governance_bypass(req: S3Request) -> bool:
    """x-amz-bypass-governance-retention: true; S3's s3:BypassGovernanceRetention is
    this project's `admin` on the bucket (as lifting a legal hold is)."""
    if (req.header("x-amz-bypass-governance-retention") or "").strip().lower() != "true":
        return False
    await authorize(req.storage, req.caller, "admin", req.bucket, req.key or None)
    return True


async def _locked_version(req: S3Request, right: str) -> ObjectVersion:
    await authorize(req.storage, req.caller, right, req.bucket, req.key)
    if await req.storage.bucket_config.object_lock(req.bucket) is None:
        raise InvalidRequest(_MISSING)
    return await req.storage.reader.resolve(req.bucket, req.key, req.query.get("versionId"))


async def get_object_retention(req: S3Request) -> Response:
    version = await _locked_version(req, "read")
    if version.retain_until is None:
        raise NoSuchObjectLockConfiguration()
    return xml_response(
        "Retention",
        [
            ("Mode", version.retention_mode or COMPLIANCE),
            ("RetainUntilDate", iso_time(version.retain_until)),
        ],
    )


async def put_object_retention(req: S3Request) -> Response:
    version = await _locked_version(req, "write")
    asked = parse_retention(await xml.read_capped(req.body()))
    bypass = await governance_bypass(req)
    mode, until = asked if asked is not None else (None, None)
    await req.storage.lifecycle.set_retention(
        version.file_id,
        retain_until=until,
        legal_hold=None,
        mode=mode,
        bypass_governance=bypass,
        clear_retention=asked is None,
    )
    await req.audit(
        "retention",
        bucket=req.bucket,
        key=req.key,
        file_id=version.file_id,
        mode=mode,
        retain_until=None if until is None else until.isoformat(),
    )
    return Response(status_code=200, headers={"x-amz-version-id": version.file_id})


async def get_object_legal_hold(req: S3Request) -> Response:
    version = await _locked_version(req, "read")
    return xml_response("LegalHold", [("Status", "ON" if version.legal_hold else "OFF")])


async def put_object_legal_hold(req: S3Request) -> Response:
    version = await _locked_version(req, "write")
    hold = parse_legal_hold(await xml.read_capped(req.body()))
    if not hold:
        # As on the REST door: whoever may write must not lift a hold, then delete.
        await authorize(req.storage, req.caller, "admin", req.bucket, req.key)
    await req.storage.lifecycle.set_retention(version.file_id, retain_until=None, legal_hold=hold)
    await req.audit(
        "retention", bucket=req.bucket, key=req.key, file_id=version.file_id, legal_hold=hold
    )
    return Response(status_code=200, headers={"x-amz-version-id": version.file_id})


async def enable_lock_on_create(req: S3Request) -> None:
    """CreateBucket with x-amz-bucket-object-lock-enabled: true (boto3's
    ObjectLockEnabledForBucket): versioning on, object lock on, no default retention."""
    if (req.header("x-amz-bucket-object-lock-enabled") or "").strip().lower() != "true":
        return
    await req.storage.buckets.update(req.bucket, versioning=True)
    await req.storage.bucket_config.set_object_lock(req.bucket, ObjectLockConfig())
    await req.audit("update_bucket", bucket=req.bucket, object_lock=ObjectLockConfig().to_json())
