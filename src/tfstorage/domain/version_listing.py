"""What ListObjectVersions pages are made of: versions, delete markers, common prefixes.

This project keeps a deleted key's versions restorable (the trash) instead of writing a
delete-marker version. An S3 client sees that trash as S3 would show it: a delete marker
on top of the key's versions. The marker's id is derived from the key's head version, so
it needs no row of its own and names the same marker until the key changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tfstorage.domain.records import ObjectVersion

_MARKER_PREFIX = "deleted."
# S3's id of the version written while versioning was off (ObjectVersion.unversioned).
NULL_VERSION_ID = "null"


def s3_version_id(version: ObjectVersion) -> str:
    """The id S3 clients know the version by: "null" for one written unversioned."""
    return NULL_VERSION_ID if version.unversioned else version.file_id


def delete_marker_id(head_file_id: str) -> str:
    return _MARKER_PREFIX + head_file_id


def marked_head(version_id: str) -> str | None:
    """The head version a delete-marker id names; None when it is no marker's id."""
    if version_id.startswith(_MARKER_PREFIX):
        return version_id[len(_MARKER_PREFIX) :]
    return None


@dataclass(frozen=True, slots=True)
class DeleteMarker:
    key: str
    version_id: str
    deleted_at: datetime
    created_by: str  # who wrote the head it hides (the trash does not record who deleted)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One row of a page: a version (is_latest as S3 means it) or a delete marker."""

    version: ObjectVersion | None
    marker: DeleteMarker | None
    is_latest: bool

    @property
    def key(self) -> str:
        return self.version.key if self.version is not None else self.marker.key  # type: ignore[union-attr]

    @property
    def version_id(self) -> str:
        if self.version is not None:
            return s3_version_id(self.version)
        assert self.marker is not None
        return self.marker.version_id


@dataclass(frozen=True, slots=True)
class VersionListing:
    entries: list[VersionEntry]  # key order, newest first within a key
    common_prefixes: list[str]
    truncated: bool
    next_key_marker: str  # "" when not truncated
    next_version_id_marker: str  # "" when the page ended on a common prefix
