"""Resumable multipart upload sessions and their parts (issue 5).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "upload_sessions",
        sa.Column("upload_id", sa.String(32), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("key", _KEY, nullable=False),
        sa.Column("blob_id", sa.String(32), nullable=False),
        sa.Column("backend_upload", sa.String(1024), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("user_metadata", _JSON, nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("declared_size", sa.BigInteger(), nullable=True),
        sa.Column("declared_sha256", sa.String(64), nullable=True),
        sa.Column("part_size", sa.BigInteger(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("touched_at", _TIME, nullable=False),
        sa.Column("completing_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("upload_id", name="pk_upload_sessions"),
    )
    op.create_index("ix_upload_sessions_bucket", "upload_sessions", ["bucket"])
    op.create_index("ix_upload_sessions_touched_at", "upload_sessions", ["touched_at"])
    op.create_table(
        "upload_parts",
        sa.Column("upload_id", sa.String(32), nullable=False),
        sa.Column("part_number", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("handle", sa.String(1024), nullable=False),
        sa.Column("stored_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["upload_id"],
            ["upload_sessions.upload_id"],
            name="fk_upload_parts_upload_id_upload_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("upload_id", "part_number", name="pk_upload_parts"),
    )


def downgrade() -> None:
    op.drop_table("upload_parts")
    op.drop_index("ix_upload_sessions_touched_at", "upload_sessions")
    op.drop_index("ix_upload_sessions_bucket", "upload_sessions")
    op.drop_table("upload_sessions")
