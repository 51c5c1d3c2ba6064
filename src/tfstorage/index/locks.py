"""Retention locks as the index enforces them: one check shared by every delete path.

Time is the database's: on PostgreSQL `now()` (one clock for every instance sharing
the index), on SQLite the host's (the database is a local file anyway).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from tfstorage.domain.object_lock import GOVERNANCE
from tfstorage.errors import ObjectLocked
from tfstorage.index.reads import utcnow
from tfstorage.index.tables import buckets, versions


def db_now(conn: Connection) -> datetime:
    if conn.dialect.name == "postgresql":
        moment: datetime = conn.execute(select(func.now())).scalar_one()
        return moment
    return utcnow()


def is_locked(now: datetime, *, bypass_governance: bool = False) -> ColumnElement[bool]:
    retained = versions.c.retain_until > now
    if bypass_governance:
        # S3's x-amz-bypass-governance-retention: GOVERNANCE gives way, COMPLIANCE (and a
        # lock from before modes, which is kept as COMPLIANCE) and legal holds do not.
        mode = versions.c.retention_mode
        retained = and_(retained, or_(mode.is_(None), mode != GOVERNANCE))
    return or_(versions.c.legal_hold.is_(True), retained)


def refuse_locked(
    conn: Connection,
    where: ColumnElement[bool],
    what: str = "delete",
    *,
    bypass_governance: bool = False,
) -> None:
    """Raise ObjectLocked (403) if any version matching `where` is locked now."""
    now = db_now(conn)
    stmt = (
        select(
            versions.c.file_id,
            versions.c.key,
            versions.c.retain_until,
            versions.c.legal_hold,
            buckets.c.name,
        )
        .join(buckets, buckets.c.id == versions.c.bucket_id)
        .where(where, is_locked(now, bypass_governance=bypass_governance))
        .limit(1)
    )
    row = conn.execute(stmt).first()
    if row is None:
        return
    why = (
        "is under legal hold"
        if row.legal_hold
        else f"is retained until {row.retain_until:%Y-%m-%dT%H:%M:%SZ}"
    )
    raise ObjectLocked(f"cannot {what}: version {row.file_id} of {row.name}/{row.key} {why}")
