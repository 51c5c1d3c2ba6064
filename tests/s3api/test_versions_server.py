"""ListObjectVersions, delete markers and canned ACLs on a real `tfstorage serve`, driven by
boto3: what the ceph/s3-tests conformance suite checks of them, kept in this repository."""

from __future__ import annotations

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.s3api.test_endpoint_server import error_code
from tests.server.conftest import ServerProcess

pytestmark = pytest.mark.timeout(120)


def versioned_bucket(s3: BaseClient, name: str) -> str:
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def test_versions_newest_first_with_delete_marker(s3: BaseClient) -> None:
    bucket = versioned_bucket(s3, "ver-basic")
    ids = [s3.put_object(Bucket=bucket, Key="k", Body=b"%d" % i)["VersionId"] for i in range(3)]
    s3.put_object(Bucket=bucket, Key="other", Body=b"o")
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert deleted["DeleteMarker"] is True
    marker_id = deleted["VersionId"]

    listing = s3.list_object_versions(Bucket=bucket)
    versions = [(v["Key"], v["VersionId"], v["IsLatest"]) for v in listing["Versions"]]
    assert versions[:3] == [("k", ids[2], False), ("k", ids[1], False), ("k", ids[0], False)]
    assert versions[3][0] == "other" and versions[3][2] is True
    (marker,) = listing["DeleteMarkers"]
    assert (marker["Key"], marker["VersionId"], marker["IsLatest"]) == ("k", marker_id, True)

    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="k", VersionId=marker_id)
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 405
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=ids[0])["Body"].read() == b"0"

    # Removing the marker brings the newest version back, as on S3.
    removed = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker_id)
    assert removed["DeleteMarker"] is True
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"2"
    assert "DeleteMarkers" not in s3.list_object_versions(Bucket=bucket)


def test_version_paging_by_key_and_version_marker(s3: BaseClient) -> None:
    bucket = versioned_bucket(s3, "ver-paging")
    expected = []
    for key in ("a", "b", "c"):
        ids = [s3.put_object(Bucket=bucket, Key=key, Body=b"x")["VersionId"] for _ in range(3)]
        expected += [(key, vid) for vid in reversed(ids)]
    seen = []
    kwargs: dict[str, str | int] = {"Bucket": bucket, "MaxKeys": 2}
    while True:
        page = s3.list_object_versions(**kwargs)
        seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]
        if not page["IsTruncated"]:
            break
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]
    assert seen == expected


def test_paging_survives_deleting_each_page(s3: BaseClient) -> None:
    """What s3-tests' teardown does: delete a page, then ask for the next with its markers."""
    bucket = "ver-nuke"
    s3.create_bucket(Bucket=bucket)
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    kwargs: dict[str, str | int] = {"Bucket": bucket, "MaxKeys": 2}
    while True:
        page = s3.list_object_versions(**kwargs)
        for v in page.get("Versions", []):
            s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        if not page["IsTruncated"]:
            break
        kwargs["KeyMarker"] = page["NextKeyMarker"]
        kwargs["VersionIdMarker"] = page["NextVersionIdMarker"]
    s3.delete_bucket(Bucket=bucket)


def test_versions_prefix_and_delimiter(s3: BaseClient) -> None:
    bucket = versioned_bucket(s3, "ver-delim")
    for key in ("dir/a", "dir/b", "top", "zed/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    listing = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["dir/", "zed/"]
    assert [v["Key"] for v in listing["Versions"]] == ["top"]
    listing = s3.list_object_versions(Bucket=bucket, Prefix="dir/")
    assert [v["Key"] for v in listing["Versions"]] == ["dir/a", "dir/b"]


def test_version_marker_needs_key_marker(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="ver-bad")
    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket="ver-bad", VersionIdMarker="abc")
    assert error_code(exc) == "InvalidArgument"


def test_s3_bucket_starts_unversioned(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="ver-plain")
    s3.put_object(Bucket="ver-plain", Key="k", Body=b"1")
    s3.put_object(Bucket="ver-plain", Key="k", Body=b"2")
    listing = s3.list_object_versions(Bucket="ver-plain")
    assert len(listing["Versions"]) == 1  # an overwrite replaced the object
    assert (
        "x-amz-delete-marker"
        not in s3.delete_object(Bucket="ver-plain", Key="k")["ResponseMetadata"]["HTTPHeaders"]
    )


def grants(policy: dict[str, object]) -> list[tuple[str, str]]:
    found = []
    for grant in policy["Grants"]:  # type: ignore[attr-defined]
        grantee = grant["Grantee"]
        found.append((grantee["Type"], grant["Permission"]))
    return sorted(found)


def test_canned_bucket_acl_maps_to_public_read(s3: BaseClient, server: ServerProcess) -> None:
    s3.create_bucket(Bucket="acl-bucket", ACL="public-read")
    assert grants(s3.get_bucket_acl(Bucket="acl-bucket")) == [
        ("CanonicalUser", "FULL_CONTROL"),
        ("Group", "READ"),
    ]
    s3.put_object(Bucket="acl-bucket", Key="k", Body=b"public")
    anonymous = httpx.get(f"{server.s3_url}/acl-bucket/k")
    assert anonymous.status_code == 200 and anonymous.content == b"public"

    s3.put_bucket_acl(Bucket="acl-bucket", ACL="private")
    assert grants(s3.get_bucket_acl(Bucket="acl-bucket")) == [("CanonicalUser", "FULL_CONTROL")]
    assert grants(s3.get_object_acl(Bucket="acl-bucket", Key="k")) == [
        ("CanonicalUser", "FULL_CONTROL")
    ]
    assert httpx.get(f"{server.s3_url}/acl-bucket/k").status_code == 403


def test_acls_it_cannot_enforce_are_refused(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="acl-refused")
    for acl in ("public-read-write", "authenticated-read"):
        with pytest.raises(ClientError) as exc:
            s3.put_bucket_acl(Bucket="acl-refused", ACL=acl)
        assert error_code(exc) == "NotImplemented"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="acl-refused", Key="k", Body=b"x", ACL="public-read")
    assert error_code(exc) == "NotImplemented"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket="acl-refused", Key="k")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404  # nothing stored
    with pytest.raises(ClientError) as exc:
        s3.create_bucket(Bucket="acl-refused-2", ACL="public-read-write")
    assert error_code(exc) == "NotImplemented"
    with pytest.raises(ClientError) as exc:
        s3.head_bucket(Bucket="acl-refused-2")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert grants(s3.get_bucket_acl(Bucket="acl-refused")) == [("CanonicalUser", "FULL_CONTROL")]


def test_unversioned_put_names_no_version(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="ver-none")
    assert "VersionId" not in s3.put_object(Bucket="ver-none", Key="k", Body=b"x")
    versioned_bucket(s3, "ver-some")
    assert s3.put_object(Bucket="ver-some", Key="k", Body=b"x")["VersionId"]


def test_recreating_ones_bucket_succeeds_unchanged(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="ver-again")
    s3.put_object(Bucket="ver-again", Key="k", Body=b"kept")
    s3.create_bucket(Bucket="ver-again")
    assert s3.get_object(Bucket="ver-again", Key="k")["Body"].read() == b"kept"
    with pytest.raises(ClientError) as exc:  # asking for another ACL: a conflict
        s3.create_bucket(Bucket="ver-again", ACL="public-read")
    assert error_code(exc) == "BucketAlreadyExists"
    assert grants(s3.get_bucket_acl(Bucket="ver-again")) == [("CanonicalUser", "FULL_CONTROL")]


def test_prefix_no_key_can_start_with_lists_nothing(s3: BaseClient) -> None:
    s3.create_bucket(Bucket="ver-prefix")
    s3.put_object(Bucket="ver-prefix", Key="a", Body=b"x")
    for prefix in ("/", "\x0a"):
        assert "Contents" not in s3.list_objects(Bucket="ver-prefix", Prefix=prefix)
        assert s3.list_objects_v2(Bucket="ver-prefix", Prefix=prefix)["KeyCount"] == 0
        assert "Versions" not in s3.list_object_versions(Bucket="ver-prefix", Prefix=prefix)
    with pytest.raises(ClientError) as exc:
        s3.list_objects(Bucket="no-such-bucket-here", Prefix="/")
    assert error_code(exc) == "NoSuchBucket"
