"""S3 access keys: each names the token whose rights it carries.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "s3_keys",
        sa.Column("access_key_id", sa.String(32), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("access_key_id", name="pk_s3_keys"),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name="fk_s3_keys_token_id_tokens", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_s3_keys_token_id", "s3_keys", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_s3_keys_token_id", table_name="s3_keys")
    op.drop_table("s3_keys")
