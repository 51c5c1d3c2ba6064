"""Integrity: corrupt-blob marking and the scrub's resumable state (issue 6).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("damage", sa.String(16), nullable=True))
        batch.add_column(sa.Column("damage_found_at", _TIME, nullable=True))
        batch.add_column(sa.Column("verified_at", _TIME, nullable=True))
    op.create_index("ix_blobs_damage", "blobs", ["damage"])
    op.create_table(
        "scrub_state",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("cursor", sa.String(32), nullable=True),
        sa.Column("pass_started_at", _TIME, nullable=True),
        sa.Column("progress", _JSON, nullable=True),
        sa.Column("last_report", _JSON, nullable=True),
        sa.Column("lease_holder", sa.String(64), nullable=True),
        sa.Column("lease_until", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_scrub_state"),
    )


def downgrade() -> None:
    op.drop_table("scrub_state")
    op.drop_index("ix_blobs_damage", "blobs")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("verified_at")
        batch.drop_column("damage_found_at")
        batch.drop_column("damage")
