"""Usage counters kept by triggers, filled from a scan of the existing index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tfstorage.index.usage import repair_counters
from tfstorage.index.usage_triggers import create_triggers

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _figure(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "usage_counters",
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        *(
            _figure(name)
            for name in (
                "objects",
                "bytes",
                "versions",
                "version_bytes",
                "trash_versions",
                "trash_bytes",
                "trashed_keys",
            )
        ),
        sa.PrimaryKeyConstraint("bucket_id", "category", "slot", name="pk_usage_counters"),
    )
    op.create_table(
        "usage_owners",
        sa.Column("bucket_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        _figure("versions"),
        _figure("bytes"),
        sa.PrimaryKeyConstraint("bucket_id", "owner", "slot", name="pk_usage_owners"),
    )
    op.create_table(
        "usage_blobs",
        sa.Column("slot", sa.Integer(), nullable=False),
        *(_figure(name) for name in ("blobs", "bytes", "referenced", "referenced_bytes")),
        sa.PrimaryKeyConstraint("slot", name="pk_usage_blobs"),
    )
    conn = op.get_bind()
    # Triggers first, then the fill: on PostgreSQL the fill locks the counters, so a
    # write that lands meanwhile (another instance still on the old code) is counted.
    create_triggers(conn)
    repair_counters(conn)


def downgrade() -> None:
    from tfstorage.index.usage_triggers import drop_triggers

    drop_triggers(op.get_bind())
    op.drop_table("usage_blobs")
    op.drop_table("usage_owners")
    op.drop_table("usage_counters")
