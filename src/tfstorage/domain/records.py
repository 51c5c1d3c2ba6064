"""The records the index hands to the service layer: frozen, plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from tfstorage.domain.blocks import BlockChecksums
from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.object_lock import VersionLock
from tfstorage.domain.uploads import PartLayout


@dataclass(frozen=True, slots=True)
class Bucket:
    name: str
    created_at: datetime
    versioning: bool = True
    # Lower-case extensions with the dot (".pt"); None means any type is allowed.
    allowed_types: tuple[str, ...] | None = None
    quota_bytes: int | None = None
    quota_objects: int | None = None
    description: str = ""
    public_read: bool = False  # GET, HEAD and listings need no token
    # Versioning was configured at least once; S3 shows no status for one where it never was.
    versioning_set: bool = True


@dataclass(frozen=True, slots=True)
class BucketUsage:
    objects: int = 0  # live keys (latest version of each key that is not deleted)
    bytes: int = 0  # sum of the sizes of those latest versions
    versions: int = 0  # every version row, including non-current and deleted keys
    version_bytes: int = 0


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One immutable upload to (bucket, key); `file_id` always names the same bytes."""

    file_id: str
    seq: int  # version order, from the database's sequence; larger is newer
    bucket: str
    key: str
    blob_id: str
    size: int
    etag: str  # MD5 hex, as S3
    sha256: str
    content_type: str
    metadata: dict[str, Any]
    tags: dict[str, str]
    created_at: datetime
    created_by: str
    is_latest: bool  # the head of its key (even if the key is deleted)
    deleted_at: datetime | None  # set when the key is deleted (in the trash)
    # The blob's damage as last found ("corrupt", "truncated", "missing"); None: not
    # known to be bad. Reads refuse marked bytes instead of serving them (issue 6).
    damage: str | None = None
    # Assembled from parts: S3's ETag for it ("<hex>-<count>"); None when written whole.
    parts_etag: str | None = None

    @property
    def part_count(self) -> int | None:
        return None if self.parts_etag is None else int(self.parts_etag.rpartition("-")[2])

    # Its lock (retention locks; S3 object lock): mode GOVERNANCE/COMPLIANCE, or None
    # for a lock set without one (kept as COMPLIANCE).
    retain_until: datetime | None = None
    retention_mode: str | None = None
    legal_hold: bool = False
    # Cache-Control, Content-Disposition... as uploaded (domain/content_headers.py).
    content_headers: dict[str, str] = field(default_factory=dict)
    # Written while its bucket's versioning was off: S3's "null" version of the key.
    unversioned: bool = False

    @property
    def visible(self) -> bool:
        """Served by (bucket, key) downloads and listings."""
        return self.is_latest and self.deleted_at is None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """What the write path hands the index once the blob is durable."""

    bucket: str
    key: str
    blob_id: str
    size: int
    md5: str
    sha256: str
    content_type: str
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_by: str = "anonymous"
    # If-Match / If-None-Match: judged on the key's head inside the commit.
    condition: WriteCondition | None = None
    # Recorded with a new blob; a version that reuses a stored blob keeps the blob's.
    blocks: BlockChecksums | None = None
    parts: PartLayout | None = None  # assembled from parts: how it was cut
    # A lock asked for with the version; the bucket's default retention applies otherwise.
    lock: VersionLock | None = None
    content_headers: dict[str, str] = field(default_factory=dict)  # sent back on downloads


@dataclass(frozen=True, slots=True)
class CommitResult:
    version: ObjectVersion
    # The freshly written blob that turned out to be a duplicate of a stored one;
    # the caller deletes it from the blob store. None when the new blob was kept.
    duplicate_blob_id: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    objects: list[ObjectVersion]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str  # "" when not truncated


class ListEntry(NamedTuple):
    """What a listing page shows of a key's latest version: the columns it reads, no
    metadata, tags or blob (index/listing.py, `list_entries`).

    A named tuple, not a frozen dataclass like the others: a page builds a thousand,
    and a frozen dataclass's __init__ (a call per field) took a third of the page."""

    key: str
    file_id: str
    size: int
    etag: str  # MD5 hex
    parts_etag: str | None  # S3's multipart ETag, when assembled from parts
    sha256: str
    content_type: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class EntryListing:
    """A listing page of `ListEntry` (what the REST and S3 listings answer with)."""

    objects: list[ListEntry]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str  # "" when not truncated


@dataclass(frozen=True, slots=True)
class FileQuery:
    """Search of latest live versions by metadata (all filters combine with AND)."""

    bucket: str | None = None
    prefix: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    min_size: int | None = None
    max_size: int | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    marker: str | None = None  # opaque, from a previous page's next_marker
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class FileSearchPage:
    files: list[ObjectVersion]
    truncated: bool
    next_marker: str


@dataclass(frozen=True, slots=True)
class IndexStats:
    buckets: dict[str, BucketUsage]
    logical_bytes: int  # sum of the sizes of every version
    stored_bytes: int  # sum of the sizes of distinct blobs (after dedup)
    blobs: int


@dataclass(frozen=True, slots=True)
class Token:
    """An API token as stored (its secret exists only as a hash)."""

    id: str
    name: str
    owner: str
    scopes: tuple[str, ...]
    buckets: tuple[str, ...]  # patterns: "models", "ckpt-*", "*"
    prefix: str  # keys must start with it ("" = any key)
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    token_id: str | None
    action: str
    bucket: str | None
    key: str | None
    file_id: str | None
    client: str | None
    request_id: str | None
    detail: dict[str, Any] | None
