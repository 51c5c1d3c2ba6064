"""Lifecycle rules, retention locks and legal holds, the runner's lease (issue 6).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # recreate="never": plain ADD COLUMN. Recreating the table on SQLite would drop its
    # AUTOINCREMENT, and deleted newest versions would have their seq reused.
    with op.batch_alter_table("versions", recreate="never") as batch:
        batch.add_column(sa.Column("retain_until", _TIME, nullable=True))
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("blobs", recreate="never") as batch:
        batch.add_column(sa.Column("location", sa.String(16), nullable=True))
    op.create_table(
        "lifecycle_rules",
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("rules", _JSON, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["bucket_id"], ["buckets.id"], name="fk_lifecycle_rules_bucket_id_buckets"
        ),
        sa.PrimaryKeyConstraint("bucket_id", name="pk_lifecycle_rules"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("lifecycle_rules")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("location")
    with op.batch_alter_table("versions", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("legal_hold")
        batch.drop_column("retain_until")
