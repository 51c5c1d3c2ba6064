"""The version ids S3 clients see: a version's own id, "null", or a delete marker's.

A bucket whose versioning was never configured names no versions; one where it is
suspended writes the "null" version (domain/version_listing.py); one where it is enabled
names each version by its file id. DeleteObject and DeleteObjects share `delete_latest`.
"""

from __future__ import annotations

from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.records import ObjectVersion
from tfstorage.domain.version_listing import NULL_VERSION_ID, delete_marker_id
from tfstorage.service.storage import Storage


def written_version_headers(version: ObjectVersion) -> dict[str, str]:
    """The x-amz-version-id a PUT, copy or completed upload answers: none for a "null"
    version, suspended or never configured alike (what ceph/s3-tests expects of both)."""
    return {} if version.unversioned else {"x-amz-version-id": version.file_id}


async def delete_latest(
    storage: Storage, bucket: str, key: str, condition: WriteCondition | None = None
) -> tuple[ObjectVersion, str | None]:
    """DELETE without a versionId: the version it touched, and the id of the delete
    marker S3 clients now see (None in a bucket that never had versioning).

    Versioning enabled: the key goes to the trash, shown as a delete marker. Suspended:
    the "null" version goes for good and the key to the trash (S3's null delete marker).
    Raises NoSuchKey when there was nothing to delete."""
    config = await storage.buckets.get(bucket)
    if config.versioning:
        gone = await storage.objects.delete_key(bucket, key, condition=condition)
        return gone, delete_marker_id(gone.file_id)
    if config.versioning_set and condition is None:
        return await storage.objects.delete_null_and_hide(bucket, key), NULL_VERSION_ID
    gone = await storage.objects.delete_key(bucket, key, condition=condition)
    return gone, NULL_VERSION_ID if config.versioning_set else None
