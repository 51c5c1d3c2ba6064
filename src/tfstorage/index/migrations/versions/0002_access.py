"""Access control: tokens, audit log, shared secrets, public-read buckets.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.String(1024).with_variant(sa.String(1024, collation="C"), "postgresql")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("buckets") as batch:
        batch.add_column(
            sa.Column("public_read", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", _JSON, nullable=False),
        sa.Column("buckets", _JSON, nullable=False),
        sa.Column("prefix", sa.String(1024), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("last_used_at", _TIME, nullable=True),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("secret_hash", name="uq_tokens_secret_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _SEQ, autoincrement=True, nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(255), nullable=True),
        sa.Column("key", _KEY, nullable=True),
        sa.Column("file_id", sa.String(32), nullable=True),
        sa.Column("client", sa.String(255), nullable=True),
        sa.Column("request_id", sa.String(32), nullable=True),
        sa.Column("detail", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_bucket", "audit_log", ["bucket"])
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
    op.drop_index("ix_audit_log_bucket", "audit_log")
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_table("audit_log")
    op.drop_table("tokens")
    with op.batch_alter_table("buckets") as batch:
        batch.drop_column("public_read")
