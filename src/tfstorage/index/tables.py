"""The index schema as SQLAlchemy Core tables; migrations/versions/ creates the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB

KEY_LENGTH = 1024


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns aware UTC datetimes, on SQLite (naive text) as on PG."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive time is ambiguous; guessing would silently shift trash expiry.
            raise ValueError("naive datetime given to the index; use an aware (UTC) one")
        value = value.astimezone(UTC)
        # SQLite compares the stored text, so every value must be UTC in one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def key_type() -> String:
    # Collation "C" makes PostgreSQL compare keys byte by byte (UTF-8 byte order equals
    # code point order), like SQLite's BINARY and Python's str ordering.
    return String(KEY_LENGTH).with_variant(String(KEY_LENGTH, collation="C"), "postgresql")


def json_type() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


def seq_type() -> Any:
    # On SQLite only INTEGER PRIMARY KEY is the rowid (and AUTOINCREMENT needs it).
    return BigInteger().with_variant(Integer(), "sqlite")


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

buckets = Table(
    "buckets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("versioning", Boolean, nullable=False),
    Column("allowed_types", json_type(), nullable=True),
    Column("quota_bytes", BigInteger, nullable=True),
    Column("quota_objects", BigInteger, nullable=True),
    Column("description", String(1024), nullable=False),
    Column("public_read", Boolean, nullable=False, server_default=false()),  # revision 0002
)

blobs = Table(
    "blobs",
    metadata,
    Column("blob_id", String(32), primary_key=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("md5", String(32), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("refcount", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

versions = Table(
    "versions",
    metadata,
    # The version order ("seq"): from the database's own sequence, never the clock.
    # sqlite_autoincrement stops SQLite from reusing the id of a deleted newest version.
    Column("id", seq_type(), primary_key=True, autoincrement=True),
    Column("file_id", String(32), nullable=False, unique=True),
    Column("bucket_id", Integer, ForeignKey("buckets.id"), nullable=False),
    Column("key", key_type(), nullable=False),
    Column("blob_id", String(32), ForeignKey("blobs.blob_id"), nullable=False, index=True),
    Column("size", BigInteger, nullable=False),
    Column("etag", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("user_metadata", json_type(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_by", String(255), nullable=False),
    Index("ix_versions_bucket_id_key_id", "bucket_id", "key", "id"),
    sqlite_autoincrement=True,
)

object_keys = Table(
    "object_keys",
    metadata,
    Column("bucket_id", Integer, ForeignKey("buckets.id"), primary_key=True),
    Column("key", key_type(), primary_key=True),
    # Indexed: deleting a version makes PostgreSQL look up rows referencing it.
    Column("current_id", seq_type(), ForeignKey("versions.id"), nullable=False, index=True),
    Column("deleted_at", UTCDateTime(), nullable=True, index=True),
)

tags = Table(
    "tags",
    metadata,
    Column("version_id", seq_type(), ForeignKey("versions.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", String(1024), nullable=False),
    Index("ix_tags_key_value", "key", "value"),
)

# Access control (revision 0002) ------------------------------------------------------
tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("owner", String(255), nullable=False),
    # SHA-256 of the secret: tokens are 256 random bits, so no slow hash is needed.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("scopes", json_type(), nullable=False),
    Column("buckets", json_type(), nullable=False),
    Column("prefix", String(KEY_LENGTH), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", seq_type(), primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("actor", String(255), nullable=False),
    Column("token_id", String(32), nullable=True),
    Column("action", String(64), nullable=False),
    Column("bucket", String(255), nullable=True, index=True),
    Column("key", key_type(), nullable=True),
    Column("file_id", String(32), nullable=True),
    Column("client", String(255), nullable=True),
    Column("request_id", String(32), nullable=True),
    Column("detail", json_type(), nullable=True),
    sqlite_autoincrement=True,
)

# Secrets shared by every instance (the presigned-URL signing key).
server_secrets = Table(
    "server_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)


# Resumable uploads (revision 0003) ---------------------------------------------------

# Batch jobs (revision 0004) ----------------------------------------------------------

# Lifecycle (revision 0005) -----------------------------------------------------------

# Integrity (revision 0006) -----------------------------------------------------------

# Analytics (revision 0007) -----------------------------------------------------------
