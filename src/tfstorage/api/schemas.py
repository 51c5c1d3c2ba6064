"""Response and request bodies. Field names keep the original service's shapes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tfstorage.domain.records import (
    AuditEntry,
    Bucket,
    BucketUsage,
    ListEntry,
    ObjectVersion,
    Token,
)
from tfstorage.domain.sizes import format_size
from tfstorage.domain.text import unstorable_reason

MAX_INT = 2**63 - 1  # what the index's BIGINT columns hold


def _storable(text: str) -> str:
    reason = unstorable_reason(text)
    if reason is not None:
        raise ValueError(reason)  # a 400 InvalidArgument naming the field
    return text


# Free text the index keeps: refused (NUL, lone surrogates) where one backend could not
# store it as sent.
StoredText = Annotated[str, AfterValidator(_storable)]


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


class FileInfo(BaseModel):
    file_id: str
    version_id: str
    bucket: str
    key: str
    filename: str
    size: int
    size_bytes: int
    size_human: str
    content_type: str
    etag: str
    sha256: str
    metadata: dict[str, Any]
    tags: dict[str, str]
    created_at: str
    last_modified: str
    created_by: str
    is_latest: bool
    deleted: bool
    url: str

    @classmethod
    def of(cls, v: ObjectVersion) -> FileInfo:
        return cls(**cls.fields_of(v))

    @staticmethod
    def fields_of(v: ObjectVersion) -> dict[str, Any]:
        return dict(
            file_id=v.file_id,
            version_id=v.file_id,
            bucket=v.bucket,
            key=v.key,
            filename=v.key.rsplit("/", 1)[-1],
            size=v.size,
            size_bytes=v.size,
            size_human=format_size(v.size),
            content_type=v.content_type,
            etag=v.etag,
            sha256=v.sha256,
            metadata=v.metadata,
            tags=v.tags,
            created_at=iso(v.created_at),
            last_modified=iso(v.created_at),
            created_by=v.created_by,
            is_latest=v.is_latest,
            deleted=v.deleted_at is not None,
            url=f"/api/v1/files/download/{v.file_id}",
        )


class UploadResult(FileInfo):
    success: bool = True
    message: str = "File uploaded successfully"
    deduplicated: bool = False


class ListedObject(BaseModel):
    key: str
    size: int
    size_bytes: int
    last_modified: str
    etag: str
    content_type: str
    file_id: str
    sha256: str

    @classmethod
    def of(cls, v: ListEntry) -> ListedObject:
        return cls(
            key=v.key,
            size=v.size,
            size_bytes=v.size,
            last_modified=iso(v.created_at),
            etag=v.etag,
            content_type=v.content_type,
            file_id=v.file_id,
            sha256=v.sha256,
        )


class ListResponse(BaseModel):
    bucket: str
    prefix: str
    delimiter: str
    objects: list[ListedObject]
    common_prefixes: list[str]
    truncated: bool
    next_marker: str


class FileSearchResponse(BaseModel):
    files: list[FileInfo]
    truncated: bool
    next_marker: str


class VersionsResponse(BaseModel):
    bucket: str
    key: str
    versions: list[FileInfo]


class DeleteResponse(BaseModel):
    success: bool = True
    message: str
    bucket: str
    key: str
    file_id: str | None = None


class BucketInfo(BaseModel):
    name: str
    creation_date: str
    objects: int
    size: str
    size_bytes: int
    versioning: bool
    allowed_types: list[str] | None
    quota_bytes: int | None
    quota_objects: int | None
    description: str
    public_read: bool

    @classmethod
    def of(cls, b: Bucket, usage: BucketUsage | None) -> BucketInfo:
        usage = usage or BucketUsage()
        return cls(
            name=b.name,
            creation_date=iso(b.created_at),
            objects=usage.objects,
            size=format_size(usage.bytes),
            size_bytes=usage.bytes,
            versioning=b.versioning,
            allowed_types=list(b.allowed_types) if b.allowed_types is not None else None,
            quota_bytes=b.quota_bytes,
            quota_objects=b.quota_objects,
            description=b.description,
            public_read=b.public_read,
        )


class BucketList(BaseModel):
    buckets: list[BucketInfo]


class BucketCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=255)  # the name rules answer InvalidBucketName
    versioning: bool = True
    allowed_types: list[StoredText] | None = Field(default=None, max_length=200)
    quota_bytes: int | None = Field(default=None, ge=0, le=MAX_INT)
    quota_objects: int | None = Field(default=None, ge=0, le=MAX_INT)
    description: StoredText = Field(default="", max_length=1024)
    public_read: bool = False


class BucketUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    versioning: bool | None = None
    allowed_types: list[StoredText] | None = Field(default=None, max_length=200)
    quota_bytes: int | None = Field(default=None, ge=0, le=MAX_INT)
    quota_objects: int | None = Field(default=None, ge=0, le=MAX_INT)
    description: StoredText | None = Field(default=None, max_length=1024)
    public_read: bool | None = None


class FileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] | None = None
    tags: dict[str, str] | list[str] | None = None
    content_type: str | None = Field(default=None, max_length=255)


class BucketDeleted(BaseModel):
    success: bool = True
    message: str
    bucket: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StoredText = Field(min_length=1, max_length=255)
    scopes: list[str] = Field(min_length=1, max_length=4)
    buckets: list[StoredText] = Field(default_factory=lambda: ["*"], min_length=1, max_length=100)
    prefix: StoredText = Field(default="", max_length=1024)
    expires_in: int | None = Field(default=None, gt=0, le=100 * 365 * 86400, description="seconds")
    owner: StoredText | None = Field(default=None, max_length=255)
    s3: bool = Field(default=False, description="also issue an S3 access key pair")


class TokenInfo(BaseModel):
    id: str
    name: str
    owner: str
    scopes: list[str]
    buckets: list[str]
    prefix: str
    created_at: str
    expires_at: str | None
    last_used_at: str | None
    revoked: bool

    @classmethod
    def of(cls, t: Token) -> TokenInfo:
        return cls(
            id=t.id,
            name=t.name,
            owner=t.owner,
            scopes=list(t.scopes),
            buckets=list(t.buckets),
            prefix=t.prefix,
            created_at=iso(t.created_at),
            expires_at=iso(t.expires_at) if t.expires_at else None,
            last_used_at=iso(t.last_used_at) if t.last_used_at else None,
            revoked=t.revoked_at is not None,
        )


class TokenCreated(TokenInfo):
    token: str = Field(description="the secret: shown once, store it now")
    access_key_id: str | None = Field(default=None, description="with s3: the S3 access key")
    secret_access_key: str | None = Field(
        default=None, description="with s3: the S3 secret, shown once"
    )


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class PresignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["GET", "PUT"]
    bucket: str = Field(max_length=255)
    key: str = Field(max_length=4096)
    expires_in: int = Field(default=3600, gt=0, le=MAX_INT)
    max_size: int | None = Field(
        default=None, gt=0, le=MAX_INT, description="largest PUT body, bytes"
    )


class PresignResponse(BaseModel):
    url: str
    expires_at: str
    method: str


class AuditRecord(BaseModel):
    id: int
    at: str
    actor: str
    token_id: str | None
    action: str
    bucket: str | None
    key: str | None
    file_id: str | None
    client: str | None
    request_id: str | None
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, e: AuditEntry) -> AuditRecord:
        return cls(**{**asdict(e), "at": iso(e.at)})


class AuditPage(BaseModel):
    entries: list[AuditRecord]
    next_after: int | None
