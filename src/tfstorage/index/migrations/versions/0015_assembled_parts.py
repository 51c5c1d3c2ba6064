"""Objects assembled from parts keep their layout; completed uploads are remembered (issue 12).

versions.parts_etag: the ETag S3 gives an object assembled from parts (the MD5 of the
parts' binary MD5s, "-", their count), NULL for objects written whole. versions.part_sizes:
each part's size, in order, so that one part can be read again (GET ?partNumber=).
versions.etag stays the whole object's MD5. Both nullable, added without a table copy.

completed_uploads: a completion remembered after its session closed, so that the same
completion sent again (a client retrying after a lost answer) gets the same version,
not NoSuchUpload. Kept as long as idle sessions are (UPLOAD_SESSION_TTL_SECONDS).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("versions", recreate="never") as batch:
        batch.add_column(sa.Column("parts_etag", sa.String(48), nullable=True))
        batch.add_column(sa.Column("part_sizes", _JSON, nullable=True))
    op.create_table(
        "completed_uploads",
        sa.Column("upload_id", sa.String(32), nullable=False),
        sa.Column("file_id", sa.String(32), nullable=False),
        sa.Column("parts_digest", sa.String(64), nullable=False),
        sa.Column("completed_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("upload_id", name="pk_completed_uploads"),
    )
    op.create_index("ix_completed_uploads_completed_at", "completed_uploads", ["completed_at"])


def downgrade() -> None:
    op.drop_index("ix_completed_uploads_completed_at", "completed_uploads")
    op.drop_table("completed_uploads")
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("part_sizes")
        batch.drop_column("parts_etag")
