"""Fewer indexes written by each upload: ix_object_keys_current_id goes (the index on
(current_id, deleted_at) starts with the same column and answers the same lookups),
ix_object_keys_deleted_at holds only trashed keys (every query on it names a deletion
time, which excludes live keys) and ix_blobs_damage only damaged blobs (every query on
it asks for damage IS NOT NULL). A new live key of a new, healthy blob is written to
none of the three: each was one more page in the WAL per upload.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRASHED = sa.text("deleted_at IS NOT NULL")
_DAMAGED = sa.text("damage IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_object_keys_current_id", table_name="object_keys")
    op.drop_index("ix_object_keys_deleted_at", table_name="object_keys")
    op.create_index(
        "ix_object_keys_deleted_at",
        "object_keys",
        ["deleted_at"],
        sqlite_where=_TRASHED,
        postgresql_where=_TRASHED,
    )
    op.drop_index("ix_blobs_damage", table_name="blobs")
    op.create_index(
        "ix_blobs_damage", "blobs", ["damage"], sqlite_where=_DAMAGED, postgresql_where=_DAMAGED
    )


def downgrade() -> None:
    op.drop_index("ix_blobs_damage", table_name="blobs")
    op.create_index("ix_blobs_damage", "blobs", ["damage"])
    op.drop_index("ix_object_keys_deleted_at", table_name="object_keys")
    op.create_index("ix_object_keys_deleted_at", "object_keys", ["deleted_at"])
    op.create_index("ix_object_keys_current_id", "object_keys", ["current_id"])
