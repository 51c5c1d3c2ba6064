"""Lifecycle in the index: rules per bucket, candidate rows, conditional expiry (with its
audit record in the same transaction), retention locks, and the runners' lease."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, delete, insert, or_, select, tuple_, update

from tfstorage.domain.lifecycle import MAX_DAYS, Candidate, Expiry
from tfstorage.domain.object_lock import COMPLIANCE, GOVERNANCE
from tfstorage.errors import InvalidArgument, NoSuchVersion, ObjectLocked
from tfstorage.index.locks import db_now, is_locked
from tfstorage.index.reads import bucket_id, load_tags, upsert
from tfstorage.index.tables import (
    audit_log,
    blobs,
    buckets,
    leases,
    lifecycle_rules,
    object_keys,
    tags,
    versions,
)
from tfstorage.index.transactions import IndexStore
from tfstorage.index.writes import delete_version, remove_versions


@dataclass(frozen=True, slots=True)
class Retention:
    file_id: str
    bucket: str
    key: str
    retain_until: datetime | None
    legal_hold: bool
    locked: bool
    mode: str | None = None  # GOVERNANCE, COMPLIANCE; None: set without a mode (COMPLIANCE)


@dataclass(frozen=True, slots=True)
class AuditFields:
    actor: str
    token_id: str | None
    request_id: str | None
    detail: Mapping[str, Any]


ARCHIVE = "archive"  # blobs.location of a blob moved to the archive tier


class LifecycleIndex(IndexStore):
    # rules -------------------------------------------------------------------------
    def get_rules(self, bucket: str) -> list[dict[str, Any]] | None:
        def run(conn: Connection) -> list[dict[str, Any]] | None:
            bid = bucket_id(conn, bucket)
            stmt = select(lifecycle_rules.c.rules).where(lifecycle_rules.c.bucket_id == bid)
            found = conn.execute(stmt).scalar_one_or_none()
            return None if found is None else list(found)

        return self._read(run)

    def set_rules(self, bucket: str, rules: list[dict[str, Any]]) -> None:
        def run(conn: Connection) -> None:
            bid = bucket_id(conn, bucket, lock="share")
            values = {"bucket_id": bid, "rules": rules, "updated_at": db_now(conn)}
            stmt = upsert(conn, lifecycle_rules).values(**values)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[lifecycle_rules.c.bucket_id],
                    set_={"rules": stmt.excluded.rules, "updated_at": stmt.excluded.updated_at},
                )
            )

        self._write(run)

    def delete_rules(self, bucket: str) -> bool:
        def run(conn: Connection) -> bool:
            bid = bucket_id(conn, bucket)
            stmt = delete(lifecycle_rules).where(lifecycle_rules.c.bucket_id == bid)
            return bool(conn.execute(stmt).rowcount)

        return self._write(run)

    # candidates ----------------------------------------------------------------------
    def candidates(
        self, bucket: str, *, noncurrent_only: bool = False
    ) -> tuple[datetime, list[Candidate]]:
        """The bucket's versions (every one, or only the non-current ones: all that the
        default rule looks at), and the database's time they were read at."""

        def run(conn: Connection) -> tuple[datetime, list[Candidate]]:
            bid = bucket_id(conn, bucket)
            now = db_now(conn)
            newer = versions.alias("newer")
            successor = (
                select(newer.c.created_at)
                .where(
                    newer.c.bucket_id == versions.c.bucket_id,
                    newer.c.key == versions.c.key,
                    newer.c.id > versions.c.id,
                )
                .order_by(newer.c.id)
                .limit(1)
                .scalar_subquery()
            )
            stmt = (
                select(
                    versions.c.id,
                    versions.c.file_id,
                    versions.c.key,
                    versions.c.size,
                    versions.c.content_type,
                    versions.c.user_metadata,
                    versions.c.created_at,
                    versions.c.retain_until,
                    versions.c.legal_hold,
                    object_keys.c.current_id,
                    object_keys.c.deleted_at,
                    successor.label("successor_created_at"),
                    versions.c.blob_id,
                    versions.c.sha256,
                    blobs.c.location,
                )
                .select_from(versions)
                .join(blobs, blobs.c.blob_id == versions.c.blob_id)
                .outerjoin(
                    object_keys,
                    and_(
                        object_keys.c.bucket_id == versions.c.bucket_id,
                        object_keys.c.key == versions.c.key,
                    ),
                )
                .where(versions.c.bucket_id == bid)
                .order_by(versions.c.key, versions.c.id.desc())
            )
            if noncurrent_only:
                stmt = stmt.where(
                    or_(
                        object_keys.c.current_id.is_(None),
                        object_keys.c.current_id != versions.c.id,
                    )
                )
            rows = conn.execute(stmt).all()
            tag_map = load_tags(conn, [row.id for row in rows])
            found: list[Candidate] = []
            for row in rows:
                found.append(
                    Candidate(
                        file_id=row.file_id,
                        seq=row.id,
                        key=row.key,
                        size=row.size,
                        content_type=row.content_type,
                        metadata=dict(row.user_metadata or {}),
                        tags=tag_map.get(row.id, {}),
                        created_at=row.created_at,
                        is_current=row.current_id == row.id,
                        deleted=row.deleted_at is not None,
                        successor_created_at=row.successor_created_at,
                        retain_until=row.retain_until,
                        legal_hold=bool(row.legal_hold),
                        blob_id=row.blob_id,
                        sha256=row.sha256,
                        archived=row.location == ARCHIVE,
                    )
                )
            return now, found

        return self._read(run)

    # acting --------------------------------------------------------------------------
    def apply(
        self,
        bucket: str,
        expiry: Expiry,
        *,
        protected_tags: Collection[tuple[str, str]],
        audit: AuditFields,
    ) -> bool:
        """Carry out one planned expiry if the key or version is still as planned (same
        head, still live or still non-current, unlocked, unprotected); record it in the
        audit log in the same transaction. False: it changed, nothing was done."""

        def run(conn: Connection) -> bool:
            bid = bucket_id(conn, bucket, lock="share")
            now = db_now(conn)
            head_of_key = (object_keys.c.bucket_id == bid) & (object_keys.c.key == expiry.key)
            # The head row first: commits, deletes and lock changes of this key wait.
            head = conn.execute(
                select(object_keys.c.current_id, object_keys.c.deleted_at)
                .where(head_of_key)
                .with_for_update()
            ).first()
            row = conn.execute(
                select(versions.c.id, versions.c.created_at).where(
                    versions.c.id == expiry.seq,
                    versions.c.bucket_id == bid,
                    versions.c.key == expiry.key,
                )
            ).first()
            if head is None or row is None or row.created_at > now:
                return False
            scope: ColumnElement[bool]
            if expiry.kind == "expire":
                if head.current_id != expiry.seq or head.deleted_at is not None:
                    return False
                scope = (versions.c.bucket_id == bid) & (versions.c.key == expiry.key)
            else:
                if head.current_id == expiry.seq:
                    return False
                scope = versions.c.id == expiry.seq
            if _any(conn, scope & is_locked(now)) or _protected(conn, scope, protected_tags):
                return False
            if expiry.kind == "expire":
                remove_versions(conn, scope, head_of_key)
            else:
                delete_version(conn, expiry.file_id)
            _audit(conn, bucket, expiry, audit, now)
            return True

        return self._write(run)

    def mark_archived(self, bucket: str, expiry: Expiry, *, audit: AuditFields) -> bool:
        """Record that the version's blob now lives in the archive tier (its bytes were
        copied there), if it is still in the primary; audit it in the same transaction."""

        def run(conn: Connection) -> bool:
            moved = conn.execute(
                update(blobs)
                .where(
                    blobs.c.blob_id == expiry.blob_id,
                    blobs.c.location.is_(None),
                    blobs.c.refcount > 0,
                )
                .values(location=ARCHIVE)
            ).rowcount
            if not moved:
                return False
            _audit(conn, bucket, expiry, audit, db_now(conn))
            return True

        return self._write(run)

    def blob_location(self, blob_id: str) -> tuple[bool, str | None]:
        """(whether the index still knows the blob, where its bytes are)."""

        def run(conn: Connection) -> tuple[bool, str | None]:
            row = conn.execute(select(blobs.c.location).where(blobs.c.blob_id == blob_id)).first()
            return (False, None) if row is None else (True, row.location)

        return self._read(run)

    # retention locks -----------------------------------------------------------------
    def get_retention(self, file_id: str) -> Retention:
        return self._read(lambda conn: _retention(conn, file_id, db_now(conn)))

    def set_retention(
        self,
        file_id: str,
        *,
        retain_until: datetime | None,
        legal_hold: bool | None,
        mode: str | None = None,
        bypass_governance: bool = False,
        clear_retention: bool = False,
    ) -> Retention:
        """Lock a version. An unexpired retention is extended, never shortened, and keeps
        its mode; only a GOVERNANCE one gives way, and only with `bypass_governance`
        (which may also remove it: `clear_retention`)."""

        def run(conn: Connection) -> Retention:
            now = db_now(conn)
            found = conn.execute(
                select(versions.c.bucket_id, versions.c.key).where(versions.c.file_id == file_id)
            ).first()
            if found is None:
                raise NoSuchVersion(file_id)
            # The bucket row (KEY SHARE), which a bucket delete takes FOR UPDATE before
            # its check: the delete waits for this lock to commit, then sees it.
            bucket_row = conn.execute(
                select(buckets.c.id)
                .where(buckets.c.id == found.bucket_id)
                .with_for_update(read=True, key_share=True)
            ).first()
            if bucket_row is None:
                raise NoSuchVersion(file_id)
            # The head row, as every other delete path takes it first: a lock never
            # lands between a deleter's check and its delete.
            conn.execute(
                select(object_keys.c.current_id)
                .where(object_keys.c.bucket_id == found.bucket_id, object_keys.c.key == found.key)
                .with_for_update()
            )
            current = _retention(conn, file_id, now, for_update=True)
            values: dict[str, Any] = {}
            if clear_retention:
                held = current.retain_until
                if (
                    held is not None
                    and held > now
                    and not (current.mode == GOVERNANCE and bypass_governance)
                ):
                    raise ObjectLocked(
                        f"version {file_id} is retained until {held:%Y-%m-%dT%H:%M:%SZ}; "
                        "only a GOVERNANCE retention is removed, and only with the bypass"
                    )
                values = {"retain_until": None, "retention_mode": None}
            elif retain_until is not None:
                if not now < retain_until <= now + timedelta(days=MAX_DAYS):
                    raise InvalidArgument("retain_until must be in the next 100 years")
                held = current.retain_until
                active = held is not None and held > now
                held_mode = current.mode or COMPLIANCE
                bypassed = held_mode == GOVERNANCE and bypass_governance
                if active and not bypassed and held is not None:
                    if retain_until < held:
                        raise ObjectLocked(
                            f"version {file_id} is retained until {held:%Y-%m-%dT%H:%M:%SZ}; "
                            "a retention date can be extended, never shortened"
                        )
                    if (mode or held_mode) != held_mode:
                        raise ObjectLocked(
                            f"version {file_id} is retained in {held_mode} mode until "
                            f"{held:%Y-%m-%dT%H:%M:%SZ}; its mode cannot change"
                        )
                values["retain_until"] = retain_until
                values["retention_mode"] = (
                    mode if mode is not None else (current.mode if active else None)
                )
            if legal_hold is not None:
                values["legal_hold"] = legal_hold
            if values:
                conn.execute(update(versions).where(versions.c.file_id == file_id).values(**values))
            return _retention(conn, file_id, now)

        return self._write(run)

    # the runners' lease ------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take (or renew) the lease unless another holder has it unexpired."""

        def run(conn: Connection) -> bool:
            now = db_now(conn)
            stmt = upsert(conn, leases).values(
                name=name, holder=holder, expires_at=now + timedelta(seconds=seconds)
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[leases.c.name],
                    set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
                    where=or_(leases.c.expires_at <= now, leases.c.holder == holder),
                )
            )
            owner = conn.execute(select(leases.c.holder).where(leases.c.name == name)).scalar_one()
            return bool(owner == holder)

        return self._write(run)

    def release_lease(self, name: str, holder: str) -> None:
        def run(conn: Connection) -> None:
            conn.execute(
                update(leases)
                .where(leases.c.name == name, leases.c.holder == holder)
                .values(expires_at=db_now(conn))
            )

        self._write(run)

    def bucket_names(self) -> list[str]:
        return self._read(
            lambda conn: list(
                conn.execute(select(buckets.c.name).order_by(buckets.c.name)).scalars()
            )
        )


def _audit(
    conn: Connection, bucket: str, expiry: Expiry, audit: AuditFields, now: datetime
) -> None:
    conn.execute(
        insert(audit_log).values(
            at=now,
            actor=audit.actor,
            token_id=audit.token_id,
            action=f"lifecycle_{expiry.kind}",
            bucket=bucket,
            key=expiry.key,
            file_id=expiry.file_id,
            client=None,
            request_id=audit.request_id,
            detail={
                **audit.detail,
                "rule": expiry.rule_id,
                "reason": expiry.reason,
                "size": expiry.size,
            },
        )
    )


def _any(conn: Connection, where: Any) -> bool:
    return conn.execute(select(versions.c.id).where(where).limit(1)).first() is not None


def _protected(conn: Connection, scope: Any, protected_tags: Collection[tuple[str, str]]) -> bool:
    if not protected_tags:
        return False
    stmt = (
        select(tags.c.version_id)
        .join(versions, versions.c.id == tags.c.version_id)
        .where(scope, tuple_(tags.c.key, tags.c.value).in_(list(protected_tags)))
        .limit(1)
    )
    return conn.execute(stmt).first() is not None


def _retention(
    conn: Connection, file_id: str, now: datetime, *, for_update: bool = False
) -> Retention:
    stmt = (
        select(
            versions.c.file_id,
            buckets.c.name,
            versions.c.key,
            versions.c.retain_until,
            versions.c.legal_hold,
            versions.c.retention_mode,
        )
        .join(buckets, buckets.c.id == versions.c.bucket_id)
        .where(versions.c.file_id == file_id)
    )
    if for_update:
        stmt = stmt.with_for_update(of=versions)
    row = conn.execute(stmt).first()
    if row is None:
        raise NoSuchVersion(file_id)
    until = row.retain_until
    return Retention(
        file_id=row.file_id,
        bucket=row.name,
        key=row.key,
        retain_until=until,
        legal_hold=bool(row.legal_hold),
        locked=bool(row.legal_hold) or (until is not None and until > now),
        mode=row.retention_mode,
    )
