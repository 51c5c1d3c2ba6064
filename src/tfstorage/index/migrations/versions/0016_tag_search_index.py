"""Tags indexed by (key, value, version_id): a tag search reads its hits in page order.

With (key, value) alone a search across buckets walked the versions in id order and
checked each for the tag: seconds at a million keys for a tag a handful carry.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tags_key_value_version_id", "tags", ["key", "value", "version_id"])
    op.drop_index("ix_tags_key_value", table_name="tags")


def downgrade() -> None:
    op.create_index("ix_tags_key_value", "tags", ["key", "value"])
    op.drop_index("ix_tags_key_value_version_id", table_name="tags")
