"""The index schema as SQLAlchemy Core tables; migrations/versions/ creates the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    false,
    text,
    true,
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

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        generic = super().result_processor(dialect, coltype)
        if dialect.name != "sqlite":
            return generic

        def from_text(value: Any) -> datetime | None:
            # SQLite's driver hands back the stored UTC text: one parse with its offset
            # makes the aware datetime. (SQLAlchemy's parse then a replace(tzinfo) cost
            # 1.3 us a value, a listing page reads a thousand.)
            if value is None:
                return None
            try:
                return datetime.fromisoformat(value + "+00:00")
            except (TypeError, ValueError):
                return generic(value) if generic is not None else value

        return from_text


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
    # S3 bucket configuration (revision 0014): None is "not configured" (S3's 404s).
    Column("tag_set", json_type(), nullable=True),
    Column("cors_rules", json_type(), nullable=True),
    Column("object_lock", json_type(), nullable=True),
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
    # Retention locks (revision 0005): a locked version is never deleted or overwritten.
    Column("retain_until", UTCDateTime(), nullable=True),
    Column("legal_hold", Boolean, nullable=False, server_default=false()),
    # GOVERNANCE or COMPLIANCE (revision 0014); None: locked before modes, COMPLIANCE's rule.
    Column("retention_mode", String(16), nullable=True),
    Index("ix_versions_bucket_id_key_id", "bucket_id", "key", "id"),
    sqlite_autoincrement=True,
)

object_keys = Table(
    "object_keys",
    metadata,
    Column("bucket_id", Integer, ForeignKey("buckets.id"), primary_key=True),
    Column("key", key_type(), primary_key=True),
    # Deleting a version makes PostgreSQL look up rows referencing it:
    # ix_object_keys_current_id_deleted_at starts with this column and serves that.
    Column("current_id", seq_type(), ForeignKey("versions.id"), nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
)

tags = Table(
    "tags",
    metadata,
    Column("version_id", seq_type(), ForeignKey("versions.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", String(1024), nullable=False),
    # Equal key and value, then version order: a tag search reads its hits in the order
    # it pages them (index/search.py), never sorting or scanning the versions.
    Index("ix_tags_key_value_version_id", "key", "value", "version_id"),
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
upload_sessions = Table(
    "upload_sessions",
    metadata,
    Column("upload_id", String(32), primary_key=True),
    Column("bucket", String(255), nullable=False, index=True),
    Column("key", key_type(), nullable=False),
    # The blob the parts are assembled into, and the blob store's handle on the parts
    # (the engine's multipart upload id on S3).
    Column("blob_id", String(32), nullable=False),
    Column("backend_upload", String(1024), nullable=False),
    Column("content_type", String(255), nullable=True),
    Column("user_metadata", json_type(), nullable=False),
    Column("tags", json_type(), nullable=False),
    Column("declared_size", BigInteger, nullable=True),
    Column("declared_sha256", String(64), nullable=True),
    # Every part but the last has this size (declared, or taken from the first part):
    # part n then sits at (n - 1) * part_size, and the blob store may write it there.
    Column("part_size", BigInteger, nullable=True),
    Column("created_by", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # Last part received (or creation): sessions idle past the TTL are expired.
    Column("touched_at", UTCDateTime(), nullable=False, index=True),
    # Set while one request assembles and commits the session: a second completion, or
    # a part arriving meanwhile, is refused until the claim is released or runs out.
    Column("completing_at", UTCDateTime(), nullable=True),
    # The lock S3's CreateMultipartUpload asked for (revision 0014), given at completion.
    Column("object_lock", json_type(), nullable=True),
)

upload_parts = Table(
    "upload_parts",
    metadata,
    Column(
        "upload_id",
        String(32),
        ForeignKey("upload_sessions.upload_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("part_number", Integer, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("md5", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("handle", String(1024), nullable=False),  # where the blob store keeps the part
    Column("stored_at", UTCDateTime(), nullable=False),
)

# Batch jobs (revision 0004) ----------------------------------------------------------
batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("kind", String(32), nullable=False),  # "delete", "copy"
    Column("state", String(16), nullable=False),  # "running", "succeeded", "failed"
    # Who may read it: the token that started it (or, without tokens, the caller's name).
    Column("owner", String(255), nullable=False),
    Column("token_id", String(32), nullable=True),
    Column("params", json_type(), nullable=False),
    Column("total", BigInteger, nullable=True),  # unknown until a prefix is listed
    Column("done", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("errors", json_type(), nullable=False),  # the first few, as {"key", "code", ...}
    Column("created_at", UTCDateTime(), nullable=False, index=True),
    # The heartbeat: a running job whose updated_at stops moving has lost its instance.
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
)


# Lifecycle (revision 0005) -----------------------------------------------------------
# (plus versions.retain_until and versions.legal_hold above)
lifecycle_rules = Table(
    "lifecycle_rules",
    metadata,
    Column("bucket_id", Integer, ForeignKey("buckets.id"), primary_key=True),
    Column("rules", json_type(), nullable=False),  # the validated rules, as sent
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Where a blob's bytes are: NULL in the primary store, "archive" once lifecycle moved
# them to the archive tier (reads find them either way; see blobs/tiered.py).
blobs.append_column(Column("location", String(16), nullable=True))

# One row per lease ("lifecycle"): the instance running it and until when.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# Integrity (revision 0006) -----------------------------------------------------------
# A blob's damage as last found by a verify, a scrub or a failed read: NULL while its
# bytes are not known to be bad, else "corrupt", "truncated" or "missing". Columns of
# `blobs` so that garbage collection forgets them with the blob and reads see them in
# the same join that finds the version.
blobs.append_column(Column("damage", String(16), nullable=True))
blobs.append_column(Column("damage_found_at", UTCDateTime(), nullable=True))
blobs.append_column(Column("verified_at", UTCDateTime(), nullable=True))
# Only damaged blobs are in it (revision 0021): a new blob, healthy, is written to
# one index fewer. Every query on it asks for damage IS NOT NULL.
Index(
    "ix_blobs_damage",
    blobs.c.damage,
    sqlite_where=blobs.c.damage.is_not(None),
    postgresql_where=blobs.c.damage.is_not(None),
)

# The scrub's resumable state, one row: the cursor of the pass under way (NULL when
# none is), its counts so far, the last finished pass's report, and the lease that lets
# one instance at a time scrub.
scrub_state = Table(
    "scrub_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("cursor", String(32), nullable=True),
    Column("pass_started_at", UTCDateTime(), nullable=True),
    Column("progress", json_type(), nullable=True),
    Column("last_report", json_type(), nullable=True),
    Column("lease_holder", String(64), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
)

# Block checksums (revision 0008) -----------------------------------------------------
# A CRC32C per `block_size` bytes of the blob, concatenated (4 bytes each, big-endian):
# ranged reads verify the blocks they touch (domain/blocks.py). NULL on blobs written
# before revision 0008 until the scrub fills them in from bytes that still match the
# blob's SHA-256; reads of those ranges go unverified meanwhile.
blobs.append_column(Column("block_size", Integer, nullable=True))
blobs.append_column(Column("block_crc32c", LargeBinary, nullable=True))

# Analytics (revision 0007) -----------------------------------------------------------
# Each version's category from its key and content type (domain/categories.py), set
# when written; statistics group by it instead of parsing a million keys per request.
versions.append_column(
    Column("category", String(16), nullable=False, server_default=text("'other'"))
)
# The statistics read these covering indexes alone, in their order (SQLite has no hash
# aggregation: a GROUP BY that follows no index sorts every row): per bucket and
# category, per bucket and owner, and "is this version a live head" as one probe.
Index(
    "ix_versions_bucket_id_category_size",
    versions.c.bucket_id,
    versions.c.category,
    versions.c.size,
    postgresql_include=["id"],  # SQLite's indexes carry the rowid (= id) anyway
)
Index(
    "ix_versions_bucket_id_created_by_size",
    versions.c.bucket_id,
    versions.c.created_by,
    versions.c.size,
)
Index("ix_object_keys_current_id_deleted_at", object_keys.c.current_id, object_keys.c.deleted_at)
# The trash by deletion time (purges, trash figures): only trashed keys are in it, so
# writing a live key, which every upload does, does not touch it (revision 0021).
Index(
    "ix_object_keys_deleted_at",
    object_keys.c.deleted_at,
    sqlite_where=object_keys.c.deleted_at.is_not(None),
    postgresql_where=object_keys.c.deleted_at.is_not(None),
)
# The largest objects are found by walking this index from the top.
Index("ix_versions_size", versions.c.size)

# Searches by content type (revision 0020): a type's versions in id order, the order a
# search pages in (index/search.py), whether few versions have the type or most do.
Index("ix_versions_content_type_id", versions.c.content_type, versions.c.id)
# And a bucket's versions in id order: a search in one bucket pages through them instead
# of reading and sorting all of them.
Index("ix_versions_bucket_id_id", versions.c.bucket_id, versions.c.id)

# Listings (revision 0019): the live keys of a bucket in key order with their heads, read
# from this index alone (index/listing.py), never the table's rows nor the trashed keys.
# deleted_at (always NULL here) is a column too: SQLite counts an index as covering only
# when it holds every column the query names, its WHERE's included.
Index(
    "ix_object_keys_live",
    object_keys.c.bucket_id,
    object_keys.c.key,
    object_keys.c.current_id,
    object_keys.c.deleted_at,
    sqlite_where=object_keys.c.deleted_at.is_(None),
    postgresql_where=object_keys.c.deleted_at.is_(None),
)

# One row per day, written (upserted) by the maintenance loop: the whole index's
# figures, and each bucket's. Buckets by name, so a deleted bucket keeps its history.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("objects", BigInteger, nullable=False),  # live keys
    Column("bytes", BigInteger, nullable=False),  # their latest versions' bytes
    Column("versions", BigInteger, nullable=False),
    Column("version_bytes", BigInteger, nullable=False),  # every version (logical)
    Column("noncurrent_bytes", BigInteger, nullable=False),
    Column("trash_bytes", BigInteger, nullable=False),
    Column("stored_bytes", BigInteger, nullable=False),  # distinct blobs (physical)
    Column("blobs", BigInteger, nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
)

bucket_usage_daily = Table(
    "bucket_usage_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("bucket", String(255), primary_key=True),
    Column("objects", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("versions", BigInteger, nullable=False),
    Column("version_bytes", BigInteger, nullable=False),
    Column("taken_at", UTCDateTime(), nullable=False),
)

# Replica catch-up journal (revision 0009) ----------------------------------------------
# Blob ids whose copy to (or deletion from) the replica failed, in the order they were
# queued. In the index rather than one instance's DATA_DIR: any instance's maintenance run
# works it off, and losing an instance loses none of it.
replica_journal = Table(
    "replica_journal",
    metadata,
    Column("id", seq_type(), primary_key=True, autoincrement=True),
    Column("operation", String(8), nullable=False),
    Column("blob_id", String(32), nullable=False),
    Column("queued_at", UTCDateTime(), nullable=False),
    sqlite_autoincrement=True,
)

# S3 access keys (revision 0010) ----------------------------------------------------------
# An S3 key pair is a second credential of a token: the key id names the token (its rights,
# expiry and revocation); the secret is derived from the key id and a server key, so no
# secret is stored here.
s3_keys = Table(
    "s3_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column(
        "token_id",
        String(32),
        ForeignKey("tokens.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("created_at", UTCDateTime(), nullable=False),
)

# Usage counters (revision 0011) --------------------------------------------------------
# Kept by triggers in the transaction of each write (index/usage_triggers.py), so health,
# stats, quotas and /metrics read a few rows instead of scanning the versions. Per bucket
# and version category, in SLOTS rows each on PostgreSQL (summed on read); category ''
# holds the bucket's count of trashed keys. No foreign key: a trigger removes a deleted
# bucket's rows.
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("bucket_id", Integer, primary_key=True),
    Column("category", String(16), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("objects", BigInteger, nullable=False),  # live keys (their head versions)
    Column("bytes", BigInteger, nullable=False),
    Column("versions", BigInteger, nullable=False),  # every version row
    Column("version_bytes", BigInteger, nullable=False),
    Column("trash_versions", BigInteger, nullable=False),  # every version of deleted keys
    Column("trash_bytes", BigInteger, nullable=False),
    Column("trashed_keys", BigInteger, nullable=False),
)

# Every version per bucket and the principal that wrote it (created_by), slotted alike.
usage_owners = Table(
    "usage_owners",
    metadata,
    Column("bucket_id", Integer, primary_key=True),
    Column("owner", String(255), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("versions", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

# The blob rows (physical storage after dedup), index-wide, and those still referenced.
usage_blobs = Table(
    "usage_blobs",
    metadata,
    Column("slot", Integer, primary_key=True),
    Column("blobs", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("referenced", BigInteger, nullable=False),
    Column("referenced_bytes", BigInteger, nullable=False),
)

# Objects assembled from parts (revision 0015) ------------------------------------------
# The ETag S3 gives an object assembled from parts (MD5 of the parts' MD5s, "-", their
# count) and each part's size in order, so a part can be read again by its number. NULL
# for objects written whole. `etag` stays the whole object's MD5 either way.
versions.append_column(Column("parts_etag", String(48), nullable=True))
versions.append_column(Column("part_sizes", json_type(), nullable=True))

# A completed upload, remembered after its session closed: the same completion sent
# again (an answer lost on the way) gets the same version instead of NoSuchUpload.
completed_uploads = Table(
    "completed_uploads",
    metadata,
    Column("upload_id", String(32), primary_key=True),
    Column("file_id", String(32), nullable=False),
    # SHA-256 of the part list the completion named: only the same list is a retry.
    Column("parts_digest", String(64), nullable=False),
    Column("completed_at", UTCDateTime(), nullable=False, index=True),
)

# Stored content headers (revision 0017) -------------------------------------------------
# Cache-Control, Content-Disposition, Content-Encoding, Content-Language, Expires as the
# upload gave them, sent back on downloads; NULL when none was given.
versions.append_column(Column("content_headers", json_type(), nullable=True))
upload_sessions.append_column(Column("content_headers", json_type(), nullable=True))
# S3's "null" version (revision 0018) ---------------------------------------------------
# Written while its bucket's versioning was off: S3's "null" version of its key, which the
# next unversioned write of the key replaces (versions written while on are kept).
versions.append_column(Column("unversioned", Boolean, nullable=False, server_default=false()))
# Versioning was configured at least once (S3: a bucket that never had it shows no Status).
buckets.append_column(Column("versioning_set", Boolean, nullable=False, server_default=true()))
