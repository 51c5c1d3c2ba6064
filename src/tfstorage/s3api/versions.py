"""ListObjectVersions: every version of a bucket's keys, trashed keys under delete markers."""

from __future__ import annotations

from starlette.responses import Response

from tfstorage.domain.version_listing import VersionEntry
from tfstorage.errors import InvalidArgument
from tfstorage.s3api.listing import Encode, can_start_a_key, encoder, max_keys, prefix_nodes
from tfstorage.s3api.request import S3Request
from tfstorage.s3api.responses import Node, iso_time, quoted_etag, xml_response
from tfstorage.service.authorization import authorize


def _entry(entry: VersionEntry, encode: Encode) -> Node:
    version, marker = entry.version, entry.marker
    if marker is not None:
        return (
            "DeleteMarker",
            [
                ("Key", encode(marker.key)),
                ("VersionId", marker.version_id),
                ("IsLatest", entry.is_latest),
                ("LastModified", iso_time(marker.deleted_at)),
                ("Owner", [("ID", marker.created_by), ("DisplayName", marker.created_by)]),
            ],
        )
    assert version is not None
    return (
        "Version",
        [
            ("Key", encode(version.key)),
            ("VersionId", entry.version_id),  # "null" for one written unversioned
            ("IsLatest", entry.is_latest),
            ("LastModified", iso_time(version.created_at)),
            ("ETag", quoted_etag(version.etag)),
            ("Size", version.size),
            ("StorageClass", "STANDARD"),
            ("Owner", [("ID", version.created_by), ("DisplayName", version.created_by)]),
        ],
    )


async def list_object_versions(req: S3Request) -> Response:
    limit = max_keys(req)
    encoding, encode = encoder(req)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    key_marker = req.query.get("key-marker", "")
    version_marker = req.query.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise InvalidArgument("A version-id marker cannot be specified without a key marker.")
    await authorize(req.storage, req.caller, "read", req.bucket, prefix)
    if limit == 0 or not can_start_a_key(prefix):
        await req.storage.buckets.get(req.bucket)
        entries, prefixes, truncated, next_key, next_version = [], [], False, "", ""
    else:
        listing = await req.storage.objects.list_object_versions(
            req.bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            version_marker=version_marker,
            limit=limit,
        )
        entries, prefixes = listing.entries, listing.common_prefixes
        truncated = listing.truncated
        next_key, next_version = listing.next_key_marker, listing.next_version_id_marker
    return xml_response(
        "ListVersionsResult",
        [
            ("Name", req.bucket),
            ("Prefix", encode(prefix)),
            ("KeyMarker", encode(key_marker)),
            ("VersionIdMarker", version_marker),
            ("NextKeyMarker", encode(next_key) if truncated else None),
            ("NextVersionIdMarker", next_version if truncated and next_version else None),
            ("MaxKeys", limit),
            ("Delimiter", encode(delimiter) if delimiter else None),
            ("IsTruncated", truncated),
            ("EncodingType", encoding),
            *[_entry(entry, encode) for entry in entries],
            *prefix_nodes(prefixes, encode),
        ],
    )
