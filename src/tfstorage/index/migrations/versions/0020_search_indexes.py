"""Versions indexed by (content_type, id) and (bucket_id, id): a search by content type,
or in one bucket, reads its hits in the order it pages them, instead of every version
(PostgreSQL) or every live key, sorted (SQLite).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_versions_content_type_id", "versions", ["content_type", "id"])
    op.create_index("ix_versions_bucket_id_id", "versions", ["bucket_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_versions_bucket_id_id", table_name="versions")
    op.drop_index("ix_versions_content_type_id", table_name="versions")
