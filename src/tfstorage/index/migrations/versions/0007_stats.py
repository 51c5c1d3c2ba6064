"""Analytics: versions.category, indexes for the statistics, daily snapshots (issue 6).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tfstorage.domain.categories import key_category

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # recreate="never": a plain ADD COLUMN on SQLite; copying the table would drop
    # its AUTOINCREMENT (seq numbers of deleted versions would come back).
    with op.batch_alter_table("versions", recreate="never") as batch:
        batch.add_column(
            sa.Column("category", sa.String(16), nullable=False, server_default=sa.text("'other'"))
        )
    _categorize_existing_versions()
    op.create_index(
        "ix_versions_bucket_id_category_size",
        "versions",
        ["bucket_id", "category", "size"],
        postgresql_include=["id"],
    )
    op.create_index(
        "ix_versions_bucket_id_created_by_size", "versions", ["bucket_id", "created_by", "size"]
    )
    op.create_index(
        "ix_object_keys_current_id_deleted_at", "object_keys", ["current_id", "deleted_at"]
    )
    op.create_index("ix_versions_size", "versions", ["size"])
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("versions", sa.BigInteger(), nullable=False),
        sa.Column("version_bytes", sa.BigInteger(), nullable=False),
        sa.Column("noncurrent_bytes", sa.BigInteger(), nullable=False),
        sa.Column("trash_bytes", sa.BigInteger(), nullable=False),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=False),
        sa.Column("blobs", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_usage_daily"),
    )
    op.create_table(
        "bucket_usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("objects", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("versions", sa.BigInteger(), nullable=False),
        sa.Column("version_bytes", sa.BigInteger(), nullable=False),
        sa.Column("taken_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("day", "bucket", name="pk_bucket_usage_daily"),
    )


def _categorize_existing_versions() -> None:
    conn = op.get_bind()
    versions = sa.table(
        "versions",
        sa.column("id", sa.BigInteger()),
        sa.column("key", sa.String()),
        sa.column("content_type", sa.String()),
        sa.column("category", sa.String()),
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(versions.c.id, versions.c.key, versions.c.content_type)
            .where(versions.c.id > last)
            .order_by(versions.c.id)
            .limit(5000)
        ).all()
        if not rows:
            return
        changed = [
            {"seq": row.id, "cat": cat}
            for row in rows
            if (cat := key_category(row.key, row.content_type)) != "other"
        ]
        if changed:
            conn.execute(
                versions.update()
                .where(versions.c.id == sa.bindparam("seq"))
                .values(category=sa.bindparam("cat")),
                changed,
            )
        last = rows[-1].id


def downgrade() -> None:
    op.drop_table("bucket_usage_daily")
    op.drop_table("usage_daily")
    op.drop_index("ix_versions_size", "versions")
    op.drop_index("ix_versions_bucket_id_created_by_size", "versions")
    op.drop_index("ix_versions_bucket_id_category_size", "versions")
    op.drop_index("ix_object_keys_current_id_deleted_at", "object_keys")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("category")
