"""Versions and upload sessions keep the content headers of their upload.

versions.content_headers / upload_sessions.content_headers: Cache-Control,
Content-Disposition, Content-Encoding, Content-Language and Expires as a JSON object,
NULL when the upload gave none. Nullable, added without a table copy.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    for table in ("versions", "upload_sessions"):
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.add_column(sa.Column("content_headers", _JSON, nullable=True))


def downgrade() -> None:
    for table in ("upload_sessions", "versions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("content_headers")
