"""S3's "null" version on a real `tfstorage serve`, driven by boto3: buckets that never had
versioning, suspended versioning, and versions written while it was enabled."""

from __future__ import annotations

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import error_code

pytestmark = pytest.mark.timeout(120)


def set_versioning(s3: BaseClient, bucket: str, status: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})


def body(s3: BaseClient, bucket: str, key: str, version_id: str | None = None) -> bytes:
    extra = {} if version_id is None else {"VersionId": version_id}
    data: bytes = s3.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    return data


def listed(s3: BaseClient, bucket: str) -> tuple[list[str], list[str]]:
    found = s3.list_object_versions(Bucket=bucket)
    return (
        [v["VersionId"] for v in found.get("Versions", [])],
        [m["VersionId"] for m in found.get("DeleteMarkers", [])],
    )


def test_new_bucket_has_no_versioning_status_until_configured(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-status")
    assert "Status" not in s3.get_bucket_versioning(Bucket="null-status")
    set_versioning(s3, "null-status", "Suspended")
    assert s3.get_bucket_versioning(Bucket="null-status")["Status"] == "Suspended"
    set_versioning(s3, "null-status", "Enabled")
    assert s3.get_bucket_versioning(Bucket="null-status")["Status"] == "Enabled"


def test_null_version_survives_enabling_and_is_addressable(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-plain")
    put = s3.put_object(Bucket="null-plain", Key="k", Body=b"plain")
    assert "VersionId" not in put  # never configured: no version named
    set_versioning(s3, "null-plain", "Enabled")
    newer = s3.put_object(Bucket="null-plain", Key="k", Body=b"enabled")["VersionId"]
    assert newer != "null"
    assert listed(s3, "null-plain") == ([newer, "null"], [])
    assert body(s3, "null-plain", "k", "null") == b"plain"
    head = s3.head_object(Bucket="null-plain", Key="k", VersionId="null")
    assert head["VersionId"] == "null"
    s3.delete_object(Bucket="null-plain", Key="k", VersionId=newer)
    assert body(s3, "null-plain", "k") == b"plain"
    s3.delete_object(Bucket="null-plain", Key="k", VersionId="null")
    with pytest.raises(ClientError) as gone:
        s3.get_object(Bucket="null-plain", Key="k")
    assert error_code(gone) == "NoSuchKey"
    assert listed(s3, "null-plain") == ([], [])
    # Removing a null version that is not there succeeds, as S3's deletes do.
    s3.delete_object(Bucket="null-plain", Key="k", VersionId="null")


def test_suspended_overwrite_replaces_only_the_null_version(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-suspended")
    set_versioning(s3, "null-suspended", "Enabled")
    kept = [s3.put_object(Bucket="null-suspended", Key="k", Body=b"v%d" % i)["VersionId"]
            for i in range(2)]  # fmt: skip
    set_versioning(s3, "null-suspended", "Suspended")
    for text in (b"null 1", b"null 2"):
        assert "VersionId" not in s3.put_object(Bucket="null-suspended", Key="k", Body=text)
    assert listed(s3, "null-suspended") == (["null", kept[1], kept[0]], [])
    assert body(s3, "null-suspended", "k") == b"null 2"
    assert [body(s3, "null-suspended", "k", v) for v in kept] == [b"v0", b"v1"]


def test_suspended_delete_removes_the_null_version_under_a_null_marker(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-delete")
    set_versioning(s3, "null-delete", "Enabled")
    kept = s3.put_object(Bucket="null-delete", Key="k", Body=b"enabled")["VersionId"]
    set_versioning(s3, "null-delete", "Suspended")
    s3.put_object(Bucket="null-delete", Key="k", Body=b"null")
    deleted = s3.delete_object(Bucket="null-delete", Key="k")
    assert (deleted["DeleteMarker"], deleted["VersionId"]) == (True, "null")
    with pytest.raises(ClientError) as hidden:
        s3.head_object(Bucket="null-delete", Key="k")
    headers = hidden.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amz-delete-marker"] == "true"
    versions, markers = listed(s3, "null-delete")
    assert versions == [kept] and len(markers) == 1
    # Deleting again keeps it hidden, and the enabled version stays.
    assert s3.delete_object(Bucket="null-delete", Key="k")["DeleteMarker"] is True
    assert listed(s3, "null-delete")[0] == [kept]
    # DeleteObjects says the same of each key.
    s3.put_object(Bucket="null-delete", Key="j", Body=b"null")
    result = s3.delete_objects(Bucket="null-delete", Delete={"Objects": [{"Key": "j"}]})
    (entry,) = result["Deleted"]
    assert (entry["DeleteMarker"], entry["DeleteMarkerVersionId"]) == (True, "null")
    with pytest.raises(ClientError):
        s3.get_object(Bucket="null-delete", Key="j", VersionId="null")


def test_delete_in_a_never_versioned_bucket_leaves_no_marker(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-never")
    s3.put_object(Bucket="null-never", Key="k", Body=b"x")
    deleted = s3.delete_object(Bucket="null-never", Key="k")
    assert "DeleteMarker" not in deleted and "VersionId" not in deleted
    with pytest.raises(ClientError) as hidden:
        s3.head_object(Bucket="null-never", Key="k")
    assert hidden.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == (
        "false"
    )
    with pytest.raises(ClientError) as absent:  # never written: no marker to speak of
        s3.head_object(Bucket="null-never", Key="missing")
    assert "x-amz-delete-marker" not in absent.value.response["ResponseMetadata"]["HTTPHeaders"]


def test_enabled_delete_answers_a_marker_of_its_own(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-enabled")
    set_versioning(s3, "null-enabled", "Enabled")
    s3.put_object(Bucket="null-enabled", Key="k", Body=b"x")
    deleted = s3.delete_object(Bucket="null-enabled", Key="k")
    assert deleted["DeleteMarker"] is True and deleted["VersionId"] not in ("", "null")
    with pytest.raises(ClientError) as hidden:
        s3.head_object(Bucket="null-enabled", Key="k")
    assert hidden.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == (
        "true"
    )


def test_copy_and_multipart_into_suspended_bucket_write_null_versions(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="null-copy")
    set_versioning(s3, "null-copy", "Enabled")
    enabled = s3.put_object(Bucket="null-copy", Key="src", Body=b"enabled")["VersionId"]
    set_versioning(s3, "null-copy", "Suspended")
    s3.put_object(Bucket="null-copy", Key="src", Body=b"null")
    copied = s3.copy_object(Bucket="null-copy", Key="dst", CopySource="null-copy/src")
    assert copied["CopySourceVersionId"] == "null" and "VersionId" not in copied
    assert body(s3, "null-copy", "dst", "null") == b"null"
    upload = s3.create_multipart_upload(Bucket="null-copy", Key="src")["UploadId"]
    part = s3.upload_part(
        Bucket="null-copy", Key="src", UploadId=upload, PartNumber=1, Body=b"parts"
    )
    done = s3.complete_multipart_upload(
        Bucket="null-copy",
        Key="src",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert "VersionId" not in done
    assert listed(s3, "null-copy") == (["null", "null", enabled], [])
    assert body(s3, "null-copy", "src", "null") == b"parts"


def test_deleting_a_version_twice_succeeds_both_times(s3: BaseClient) -> None:
    # S3's deletes are idempotent: concurrent DeleteObjects naming one version all succeed.
    s3.create_bucket(Bucket="null-twice")
    set_versioning(s3, "null-twice", "Enabled")
    first = s3.put_object(Bucket="null-twice", Key="k", Body=b"1")["VersionId"]
    second = s3.put_object(Bucket="null-twice", Key="k", Body=b"2")["VersionId"]
    for _ in range(2):
        s3.delete_object(Bucket="null-twice", Key="k", VersionId=first)
    objects = {"Objects": [{"Key": "k", "VersionId": second}]}
    for _ in range(2):
        result = s3.delete_objects(Bucket="null-twice", Delete=objects)
        assert "Errors" not in result and result["Deleted"][0]["VersionId"] == second
    assert listed(s3, "null-twice") == ([], [])
    with pytest.raises(ClientError) as missing:
        s3.delete_object(Bucket="null-no-bucket", Key="k", VersionId=first)
    assert error_code(missing) == "NoSuchBucket"
