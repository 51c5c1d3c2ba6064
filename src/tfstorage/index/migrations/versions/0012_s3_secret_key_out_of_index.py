"""The S3 server key leaves the index: delete the `s3-secret-key` row of server_secrets.

S3 secrets were HMAC(server_secrets['s3-secret-key'], access key id), with both values in
the index, so a copy of the index alone yielded every S3 secret. The key now comes from
S3_SECRET_KEY or DATA_DIR/s3-secret.key (service/s3keys.py), never from the index. Every
S3 key pair issued before this revision stops working and must be re-issued (a new token
with `"s3": true`; the bootstrap admin's admin.s3 is rewritten by deleting it and
restarting). Acceptable: the S3 endpoint landed the day this revision was written.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM server_secrets WHERE name = 's3-secret-key'"))


def downgrade() -> None:
    # Nothing to restore: the deleted key must not come back, and 0011's code makes a new
    # one on demand.
    pass
