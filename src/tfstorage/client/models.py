"""What the SDK returns: small frozen records built from the server's JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Called with the number of bytes just transferred (a delta). On a resumed transfer the
#: bytes already in place are reported first, in one call, so a bar starts where it is.
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class ObjectInfo:
    """One object version: `etag` is the MD5 hex (as S3), `sha256` the SHA-256 hex."""

    bucket: str
    key: str
    size: int
    etag: str
    sha256: str
    file_id: str
    content_type: str = ""
    last_modified: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    is_latest: bool = True
    deleted: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any], bucket: str | None = None) -> ObjectInfo:
        return cls(
            bucket=body.get("bucket") or bucket or "",
            key=body["key"],
            size=int(body["size"]),
            etag=body.get("etag", ""),
            sha256=body.get("sha256", ""),
            file_id=body.get("file_id", ""),
            content_type=body.get("content_type", ""),
            last_modified=body.get("last_modified") or body.get("created_at") or "",
            metadata=body.get("metadata") or {},
            tags=body.get("tags") or {},
            is_latest=body.get("is_latest", True),
            deleted=body.get("deleted", False),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "sha256": self.sha256,
            "file_id": self.file_id,
            "content_type": self.content_type,
            "last_modified": self.last_modified,
            "metadata": self.metadata,
            "tags": self.tags,
            "is_latest": self.is_latest,
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class Listing:
    """Keys under a prefix (all pages), and the common prefixes when a delimiter is used."""

    bucket: str
    prefix: str
    objects: list[ObjectInfo]
    common_prefixes: list[str]


@dataclass
class TransferReport:
    """What a directory transfer did: keys (or relative paths) uploaded/downloaded,
    skipped because the SHA-256 already matched, and failed (with the reason)."""

    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "transferred": len(self.transferred),
            "skipped": len(self.skipped),
            "failed": dict(sorted(self.failed.items())),
            "bytes": self.bytes,
        }
