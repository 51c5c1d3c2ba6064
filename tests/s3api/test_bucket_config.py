"""S3 bucket configuration against a real server process, driven by boto3 and httpx
(issue 12): bucket tagging, CORS (configuration, unsigned preflight, headers on actual
answers and errors) and object lock (bucket configuration, retention, legal hold, the
lock headers, the governance bypass). Bad input: S3's status and code, nothing stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import error_code, new_keys, s3_client
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)

FAR = datetime(2031, 1, 1, tzinfo=UTC)


def new_bucket(s3: BaseClient, **kwargs: Any) -> str:
    name = f"cfg-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, **kwargs)
    return name


def refused(code: str, status: int, call: Any, **kwargs: Any) -> None:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    assert (error_code(exc), exc.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        code,
        status,
    )


# --- bucket tagging ------------------------------------------------------------------


def test_bucket_tagging(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    refused("NoSuchTagSet", 404, s3.get_bucket_tagging, Bucket=bucket)
    tag_set = [{"Key": "team", "Value": "vision"}, {"Key": "cost centre", "Value": "é-42"}]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set})
    got = s3.get_bucket_tagging(Bucket=bucket)["TagSet"]
    assert sorted(got, key=lambda t: t["Key"]) == sorted(tag_set, key=lambda t: t["Key"])
    # Bucket tags are not object tags: an object in the bucket has none.
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3.get_object_tagging(Bucket=bucket, Key="k")["TagSet"] == []
    assert s3.delete_bucket_tagging(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 204
    refused("NoSuchTagSet", 404, s3.get_bucket_tagging, Bucket=bucket)
    refused("NoSuchBucket", 404, s3.get_bucket_tagging, Bucket="cfg-missing-bucket")


@pytest.mark.parametrize(
    "tag_set",
    [
        [{"Key": f"k{i}", "Value": "v"} for i in range(51)],
        [{"Key": "k" * 129, "Value": "v"}],
        [{"Key": "k", "Value": "v" * 257}],
        [{"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}],
    ],
    ids=["51-tags", "long-key", "long-value", "duplicate"],
)
def test_bad_bucket_tags_are_refused_and_the_old_set_stays(
    s3: BaseClient, tag_set: list[dict[str, str]]
) -> None:
    bucket = new_bucket(s3)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "keep", "Value": "me"}]})
    refused("InvalidTag", 400, s3.put_bucket_tagging, Bucket=bucket, Tagging={"TagSet": tag_set})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "keep", "Value": "me"}]


def test_fifty_tags_of_the_longest_size_are_kept(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    tag_set = [{"Key": f"{i:02d}" + "k" * 126, "Value": "v" * 256} for i in range(50)]
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tag_set})
    assert len(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == 50


# --- CORS ----------------------------------------------------------------------------

RULES = {
    "CORSRules": [
        {
            "ID": "app",
            "AllowedOrigins": ["https://app.example"],
            "AllowedMethods": ["GET", "PUT"],
            "AllowedHeaders": ["content-type", "x-amz-*"],
            "ExposeHeaders": ["ETag", "x-amz-version-id"],
            "MaxAgeSeconds": 600,
        },
        {"AllowedOrigins": ["https://*.readers.example"], "AllowedMethods": ["GET"]},
    ]
}


def test_cors_configuration_round_trip_and_validation(s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    refused("NoSuchCORSConfiguration", 404, s3.get_bucket_cors, Bucket=bucket)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"]
    for bad in (
        {"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]},
        {"AllowedOrigins": ["https://*.*.example"], "AllowedMethods": ["GET"]},
        {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["*a*"]},
    ):
        refused(
            "InvalidRequest",
            400,
            s3.put_bucket_cors,
            Bucket=bucket,
            CORSConfiguration={"CORSRules": [bad]},
        )
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"] == RULES["CORSRules"]  # unchanged
    s3.delete_bucket_cors(Bucket=bucket)
    refused("NoSuchCORSConfiguration", 404, s3.get_bucket_cors, Bucket=bucket)


def test_cors_preflight_and_actual_answers(server: ServerProcess, s3: BaseClient) -> None:
    bucket = new_bucket(s3)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=RULES)
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"hello")
    url = f"{server.s3_url}/{bucket}/a.txt"
    allowed = httpx.options(
        url,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "Content-Type, X-Amz-Date",
        },
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert allowed.headers["access-control-allow-methods"] == "GET, PUT"
    assert allowed.headers["access-control-allow-headers"] == "Content-Type, X-Amz-Date"
    assert allowed.headers["access-control-max-age"] == "600"
    assert allowed.headers["access-control-expose-headers"] == "ETag, x-amz-version-id"
    wildcard = httpx.options(
        url,
        headers={"Origin": "https://a.readers.example", "Access-Control-Request-Method": "GET"},
    )
    assert wildcard.headers["access-control-allow-origin"] == "https://a.readers.example"
    for origin, method, asked in [
        ("https://evil.example", "GET", ""),  # no origin matches
        ("https://a.readers.example", "PUT", ""),  # the method is not that rule's
        ("https://app.example", "DELETE", ""),
        ("https://app.example", "PUT", "authorization-x"),  # a header no pattern covers
    ]:
        headers = {"Origin": origin, "Access-Control-Request-Method": method}
        if asked:
            headers["Access-Control-Request-Headers"] = asked
        denied = httpx.options(url, headers=headers)
        assert denied.status_code == 403, (origin, method)
        assert "<Code>AccessForbidden</Code>" in denied.text
        assert "CORSResponse" in denied.text
        assert "access-control-allow-origin" not in denied.headers
    no_origin = httpx.options(url, headers={"Access-Control-Request-Method": "GET"})
    assert no_origin.status_code == 400
    # Actual answers: presigned GET from an allowed origin, and an error (NoSuchKey).
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "a.txt"})
    got = httpx.get(get_url, headers={"Origin": "https://app.example"})
    assert got.status_code == 200 and got.content == b"hello"
    assert got.headers["access-control-allow-origin"] == "https://app.example"
    assert got.headers["access-control-expose-headers"] == "ETag, x-amz-version-id"
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "no"})
    error = httpx.get(missing, headers={"Origin": "https://app.example"})
    assert error.status_code == 404
    assert error.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.get(get_url, headers={"Origin": "https://evil.example"})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    # A bucket without rules answers preflights 403, and actual answers carry nothing.
    bare = new_bucket(s3)
    bare_pre = httpx.options(
        f"{server.s3_url}/{bare}/a.txt",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
    )
    assert bare_pre.status_code == 403
    s3.delete_bucket_cors(Bucket=bucket)
    after = httpx.options(
        url, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    )
    assert after.status_code == 403


# --- object lock ---------------------------------------------------------------------

LOCK_DAYS = {
    "ObjectLockEnabled": "Enabled",
    "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
}


def test_object_lock_configuration(s3: BaseClient) -> None:
    plain = new_bucket(s3)
    refused(
        "ObjectLockConfigurationNotFoundError",
        404,
        s3.get_object_lock_configuration,
        Bucket=plain,
    )
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Suspended"})
    refused(
        "InvalidBucketState",
        409,
        s3.put_object_lock_configuration,
        Bucket=plain,
        ObjectLockConfiguration=LOCK_DAYS,
    )
    refused(
        "ObjectLockConfigurationNotFoundError",
        404,
        s3.get_object_lock_configuration,
        Bucket=plain,
    )
    locked = new_bucket(s3, ObjectLockEnabledForBucket=True)
    assert s3.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"
    got = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert got == {"ObjectLockEnabled": "Enabled"}
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=LOCK_DAYS)
    got = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    assert got == LOCK_DAYS
    refused(
        "InvalidBucketState",
        409,
        s3.put_bucket_versioning,
        Bucket=locked,
        VersioningConfiguration={"Status": "Suspended"},
    )
    for conf, code in [
        ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 0}}}, "InvalidRetentionPeriod"),
        ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1, "Years": 1}}}, "MalformedXML"),
        ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "governance", "Days": 1}}}, "MalformedXML"),
        ({"ObjectLockEnabled": "Disabled"}, "MalformedXML"),
    ]:  # fmt: skip
        refused(
            code, 400, s3.put_object_lock_configuration, Bucket=locked, ObjectLockConfiguration=conf
        )
    assert s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"] == LOCK_DAYS
    # The default retention locks every new version, whatever door wrote it.
    before = datetime.now(UTC)
    s3.put_object(Bucket=locked, Key="d", Body=b"x")
    head = s3.head_object(Bucket=locked, Key="d")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    expected = before + timedelta(days=1)
    assert abs(head["ObjectLockRetainUntilDate"] - expected) < timedelta(minutes=1)
    refused("AccessDenied", 403, s3.delete_object, Bucket=locked, Key="d", VersionId=head["VersionId"])  # fmt: skip


def test_retention_and_legal_hold(s3: BaseClient, rest: httpx.Client) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    version = s3.put_object(Bucket=bucket, Key="k", Body=b"x")["VersionId"]
    refused("NoSuchObjectLockConfiguration", 404, s3.get_object_retention, Bucket=bucket, Key="k")
    assert s3.get_object_legal_hold(Bucket=bucket, Key="k")["LegalHold"] == {"Status": "OFF"}
    s3.put_object_retention(
        Bucket=bucket, Key="k", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": FAR}
    )
    assert s3.get_object_retention(Bucket=bucket, Key="k")["Retention"] == {
        "Mode": "GOVERNANCE",
        "RetainUntilDate": FAR,
    }
    # The REST door sees the same lock.
    lock = rest.get(f"/api/v1/files/{version}/retention").json()
    assert lock["locked"] is True and lock["retain_until"].startswith("2031-01-01T00:00:00")
    assert lock["mode"] == "GOVERNANCE"
    earlier = FAR - timedelta(days=1)
    refused(
        "AccessDenied",
        403,
        s3.put_object_retention,
        Bucket=bucket,
        Key="k",
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": earlier},
    )
    refused("AccessDenied", 403, s3.delete_object, Bucket=bucket, Key="k", VersionId=version)
    s3.put_object_retention(
        Bucket=bucket,
        Key="k",
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": earlier},
        BypassGovernanceRetention=True,
    )
    assert (
        s3.get_object_retention(Bucket=bucket, Key="k")["Retention"]["RetainUntilDate"] == earlier
    )
    # An empty Retention removes a GOVERNANCE one, with the bypass only.
    refused("AccessDenied", 403, s3.put_object_retention, Bucket=bucket, Key="k", Retention={})
    s3.put_object_retention(Bucket=bucket, Key="k", Retention={}, BypassGovernanceRetention=True)
    refused("NoSuchObjectLockConfiguration", 404, s3.get_object_retention, Bucket=bucket, Key="k")
    s3.put_object_retention(
        Bucket=bucket, Key="k", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": earlier}
    )
    # Legal hold: holds even against the bypass.
    s3.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "ON"})
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ObjectLockLegalHoldStatus"] == "ON"
    refused(
        "AccessDenied",
        403,
        s3.delete_object,
        Bucket=bucket,
        Key="k",
        VersionId=version,
        BypassGovernanceRetention=True,
    )
    s3.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "OFF"})
    deleted = s3.delete_object(
        Bucket=bucket, Key="k", VersionId=version, BypassGovernanceRetention=True
    )
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    refused("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="k")
    # Bad input.
    s3.put_object(Bucket=bucket, Key="m", Body=b"x")
    refused(
        "MalformedXML",
        400,
        s3.put_object_legal_hold,
        Bucket=bucket,
        Key="m",
        LegalHold={"Status": "abc"},
    )
    refused(
        "MalformedXML",
        400,
        s3.put_object_retention,
        Bucket=bucket,
        Key="m",
        Retention={"Mode": "governance", "RetainUntilDate": FAR},
    )
    refused("NoSuchObjectLockConfiguration", 404, s3.get_object_retention, Bucket=bucket, Key="m")
    # A bucket without object lock has no retention to speak of.
    plain = new_bucket(s3)
    s3.put_object(Bucket=plain, Key="k", Body=b"x")
    refused(
        "InvalidRequest",
        400,
        s3.put_object_retention,
        Bucket=plain,
        Key="k",
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": FAR},
    )
    refused("InvalidRequest", 400, s3.get_object_legal_hold, Bucket=plain, Key="k")


def test_compliance_holds_against_the_bypass(s3: BaseClient) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    put = s3.put_object(
        Bucket=bucket,
        Key="c",
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=soon,
    )
    for retention in (
        {"Mode": "COMPLIANCE", "RetainUntilDate": soon - timedelta(hours=1)},
        {"Mode": "GOVERNANCE", "RetainUntilDate": soon + timedelta(days=1)},
    ):
        refused(
            "AccessDenied",
            403,
            s3.put_object_retention,
            Bucket=bucket,
            Key="c",
            Retention=retention,
            BypassGovernanceRetention=True,
        )
    refused(
        "AccessDenied",
        403,
        s3.delete_object,
        Bucket=bucket,
        Key="c",
        VersionId=put["VersionId"],
        BypassGovernanceRetention=True,
    )
    # Extending is allowed; deleting the key only hides it (a delete marker's role).
    s3.put_object_retention(
        Bucket=bucket, Key="c", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": FAR}
    )
    assert s3.delete_object(Bucket=bucket, Key="c")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_lock_headers_on_put_and_copy(s3: BaseClient) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    s3.put_object(
        Bucket=bucket,
        Key="p",
        Body=b"data",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=FAR,
        ObjectLockLegalHoldStatus="ON",
    )
    for call in (s3.head_object, s3.get_object):
        got = call(Bucket=bucket, Key="p")
        assert got["ObjectLockMode"] == "GOVERNANCE"
        assert got["ObjectLockRetainUntilDate"] == FAR
        assert got["ObjectLockLegalHoldStatus"] == "ON"
    copied = s3.copy_object(
        Bucket=bucket,
        Key="q",
        CopySource={"Bucket": bucket, "Key": "p"},
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=FAR,
    )
    head = s3.head_object(Bucket=bucket, Key="q")
    assert head["VersionId"] == copied["VersionId"]
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", FAR)
    assert "ObjectLockLegalHoldStatus" not in head  # a lock is the version's, not copied


def test_bad_lock_headers_store_nothing(s3: BaseClient) -> None:
    locked = new_bucket(s3, ObjectLockEnabledForBucket=True)
    plain = new_bucket(s3)
    past = datetime(2020, 1, 1, tzinfo=UTC)
    for bucket, kwargs, code in [
        (plain, {"ObjectLockLegalHoldStatus": "ON"}, "InvalidRequest"),
        (plain, {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": FAR}, "InvalidRequest"),
        (locked, {"ObjectLockMode": "GOVERNANCE"}, "InvalidArgument"),
        (locked, {"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": past}, "InvalidArgument"),
    ]:  # fmt: skip
        refused(code, 400, s3.put_object, Bucket=bucket, Key="bad", Body=b"x", **kwargs)
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    raw = new_bucket(s3, ObjectLockEnabledForBucket=True)
    s3.put_object(Bucket=raw, Key="src", Body=b"x")
    # CopyObject asks for a lock of a bucket without object lock: nothing copied.
    refused(
        "InvalidRequest",
        400,
        s3.copy_object,
        Bucket=plain,
        Key="copy",
        CopySource={"Bucket": raw, "Key": "src"},
        ObjectLockLegalHoldStatus="ON",
    )
    assert s3.list_objects_v2(Bucket=plain).get("KeyCount") == 0


def test_multipart_lock_is_given_at_completion(s3: BaseClient) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    upload = s3.create_multipart_upload(
        Bucket=bucket,
        Key="big",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=FAR,
        ObjectLockLegalHoldStatus="ON",
    )["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"x" * 10)
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["VersionId"] == done["VersionId"]
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", FAR)
    assert head["ObjectLockLegalHoldStatus"] == "ON"
    refused(
        "AccessDenied", 403, s3.delete_object, Bucket=bucket, Key="big", VersionId=done["VersionId"]
    )
    plain = new_bucket(s3)
    refused(
        "InvalidRequest",
        400,
        s3.create_multipart_upload,
        Bucket=plain,
        Key="big",
        ObjectLockLegalHoldStatus="ON",
    )
    assert s3.list_multipart_uploads(Bucket=plain).get("Uploads", []) == []


def test_delete_objects_honours_locks_and_the_bypass(s3: BaseClient) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    gov = s3.put_object(
        Bucket=bucket,
        Key="g",
        Body=b"1",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=FAR,
    )["VersionId"]
    held = s3.put_object(Bucket=bucket, Key="h", Body=b"2", ObjectLockLegalHoldStatus="ON")[
        "VersionId"
    ]
    batch = {"Objects": [{"Key": "g", "VersionId": gov}, {"Key": "h", "VersionId": held}]}
    first = s3.delete_objects(Bucket=bucket, Delete=batch)
    assert sorted((e["Key"], e["Code"]) for e in first["Errors"]) == [
        ("g", "AccessDenied"),
        ("h", "AccessDenied"),
    ]
    second = s3.delete_objects(Bucket=bucket, Delete=batch, BypassGovernanceRetention=True)
    assert [d["Key"] for d in second["Deleted"]] == ["g"]
    assert [(e["Key"], e["Code"]) for e in second["Errors"]] == [("h", "AccessDenied")]
    assert s3.head_object(Bucket=bucket, Key="h")["VersionId"] == held


def test_bypass_and_lifting_a_hold_need_admin(
    server: ServerProcess, s3: BaseClient, rest: httpx.Client
) -> None:
    bucket = new_bucket(s3, ObjectLockEnabledForBucket=True)
    keys = new_keys(rest, name="writer", buckets=[bucket])
    writer = s3_client(server, keys["access_key_id"], keys["secret_access_key"])
    version = writer.put_object(
        Bucket=bucket,
        Key="k",
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=FAR,
    )["VersionId"]
    writer.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "ON"})
    refused(
        "AccessDenied",
        403,
        writer.put_object_legal_hold,
        Bucket=bucket,
        Key="k",
        LegalHold={"Status": "OFF"},
    )
    s3.put_object_legal_hold(Bucket=bucket, Key="k", LegalHold={"Status": "OFF"})
    refused(
        "AccessDenied",
        403,
        writer.delete_object,
        Bucket=bucket,
        Key="k",
        VersionId=version,
        BypassGovernanceRetention=True,
    )
    refused("AccessDenied", 403, writer.put_bucket_cors, Bucket=bucket, CORSConfiguration=RULES)
    refused(
        "AccessDenied",
        403,
        writer.put_bucket_tagging,
        Bucket=bucket,
        Tagging={"TagSet": [{"Key": "a", "Value": "b"}]},
    )
    assert s3.head_object(Bucket=bucket, Key="k")["VersionId"] == version
