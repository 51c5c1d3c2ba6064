"""Initial schema: buckets, blobs, versions, object_keys, tags.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand and frozen: later changes go in new revisions, never here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "buckets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("versioning", sa.Boolean(), nullable=False),
        sa.Column("allowed_types", _JSON, nullable=True),
        sa.Column("quota_bytes", sa.BigInteger(), nullable=True),
        sa.Column("quota_objects", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_buckets"),
        sa.UniqueConstraint("name", name="uq_buckets_name"),
    )
    op.create_table(
        "blobs",
        sa.Column("blob_id", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("refcount", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("blob_id", name="pk_blobs"),
        sa.UniqueConstraint("sha256", name="uq_blobs_sha256"),
    )
    op.create_table(
        "versions",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("file_id", sa.String(32), nullable=False),
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("blob_id", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("user_metadata", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.UniqueConstraint("file_id", name="uq_versions_file_id"),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["buckets.id"], name="fk_versions_bucket_id_buckets"
        ),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.blob_id"], name="fk_versions_blob_id_blobs"),
        # AUTOINCREMENT: SQLite never hands out the id of a deleted newest version again.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_versions_blob_id", "versions", ["blob_id"])
    op.create_index("ix_versions_bucket_id_key_id", "versions", ["bucket_id", "key", "id"])
    op.create_table(
        "object_keys",
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("current_id", _SEQ, nullable=False),
        sa.Column("deleted_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("bucket_id", "key", name="pk_object_keys"),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["buckets.id"], name="fk_object_keys_bucket_id_buckets"
        ),
        sa.ForeignKeyConstraint(
            ["current_id"], ["versions.id"], name="fk_object_keys_current_id_versions"
        ),
    )
    op.create_index("ix_object_keys_current_id", "object_keys", ["current_id"])
    op.create_index("ix_object_keys_deleted_at", "object_keys", ["deleted_at"])
    op.create_table(
        "tags",
        sa.Column("version_id", _SEQ, nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint("version_id", "key", name="pk_tags"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_tags_version_id_versions"
        ),
    )
    op.create_index("ix_tags_key_value", "tags", ["key", "value"])


def downgrade() -> None:
    op.drop_table("tags")
    op.drop_table("object_keys")
    op.drop_table("versions")
    op.drop_table("blobs")
    op.drop_table("buckets")
