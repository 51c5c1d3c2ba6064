"""Block checksums: blobs.block_size and blobs.block_crc32c (issue 10).

Both nullable, added without rewriting the table: no downtime, and blobs written before
this revision get theirs from the scrub, which fills them in only from bytes that still
hash to the blob's SHA-256.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate="never": a plain ADD COLUMN on SQLite too (no table copy, no long lock).
    with op.batch_alter_table("blobs", recreate="never") as batch:
        batch.add_column(sa.Column("block_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("block_crc32c", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("block_crc32c")
        batch.drop_column("block_size")
