"""S3's "null" version: versions written while a bucket was unversioned, and whether a
bucket's versioning was ever configured.

versions.unversioned: written while its bucket's versioning was off. S3 calls such a
version "null"; the next unversioned write of the key replaces it (and only it), so the
versions written while versioning was on stay. Every version already in a bucket with
versioning off is one: those buckets kept one version per key, the one the next write
replaces.

buckets.versioning_set: versioning was configured at least once. GetBucketVersioning
answers no Status for a bucket where it never was (S3's "never enabled"), "Suspended"
otherwise. True for the existing buckets: they keep the answer they gave.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("buckets", recreate="never") as batch:
        batch.add_column(
            sa.Column("versioning_set", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("versions", recreate="never") as batch:
        batch.add_column(
            sa.Column("unversioned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "UPDATE versions SET unversioned = TRUE WHERE bucket_id IN "
        "(SELECT id FROM buckets WHERE versioning = FALSE)"
    )


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("unversioned")
    with op.batch_alter_table("buckets") as batch:
        batch.drop_column("versioning_set")
