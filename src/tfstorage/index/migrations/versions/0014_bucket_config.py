"""S3 bucket configuration (issue 12): bucket tags, CORS rules and object lock on the
bucket row; the retention mode (GOVERNANCE or COMPLIANCE) of a version's lock; the lock
a multipart upload asked for, applied when it completes.

A version locked before this revision has no mode: it keeps the rule it was locked
under (extend, never shorten: S3's COMPLIANCE).

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("buckets", recreate="never") as batch:
        batch.add_column(sa.Column("tag_set", _JSON, nullable=True))
        batch.add_column(sa.Column("cors_rules", _JSON, nullable=True))
        batch.add_column(sa.Column("object_lock", _JSON, nullable=True))
    # recreate="never": plain ADD COLUMN, as 0005 (SQLite's AUTOINCREMENT must stay).
    with op.batch_alter_table("versions", recreate="never") as batch:
        batch.add_column(sa.Column("retention_mode", sa.String(16), nullable=True))
    with op.batch_alter_table("upload_sessions", recreate="never") as batch:
        batch.add_column(sa.Column("object_lock", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("upload_sessions") as batch:
        batch.drop_column("object_lock")
    with op.batch_alter_table("versions", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("retention_mode")
    with op.batch_alter_table("buckets") as batch:
        batch.drop_column("object_lock")
        batch.drop_column("cors_rules")
        batch.drop_column("tag_set")
