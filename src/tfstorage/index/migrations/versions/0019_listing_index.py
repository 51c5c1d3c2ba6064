"""Live keys indexed by (bucket_id, key, current_id): a listing page reads this alone.

(deleted_at, NULL in every entry, too: SQLite takes an index as covering only when it
holds every column a query names.)

The primary key gives the key order, but every entry then cost a read of the table's
row (is the key trashed? which version is its head?), and trashed keys were walked past.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    live = sa.text("deleted_at IS NULL")
    op.create_index(
        "ix_object_keys_live",
        "object_keys",
        ["bucket_id", "key", "current_id", "deleted_at"],
        sqlite_where=live,
        postgresql_where=live,
    )


def downgrade() -> None:
    op.drop_index("ix_object_keys_live", table_name="object_keys")
