"""UploadIndex: resumable upload sessions and their parts, shared by every instance.

A session row names the blob its parts will be assembled into and the blob store's
handle on those parts; a part row says where one part is and what it hashes to. The
session is closed (its rows deleted) inside the transaction that commits the object, so
the object appears exactly when the session goes: completing twice cannot happen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from tfstorage.domain.content_headers import known_content_headers
from tfstorage.domain.object_lock import VersionLock
from tfstorage.domain.records import CommitResult
from tfstorage.domain.uploads import UploadPart, UploadSession
from tfstorage.errors import Conflict, EntityTooLarge, NoSuchUpload
from tfstorage.index.listing import group_of, prefix_range, successor
from tfstorage.index.reads import bucket_id, require_aware, upsert, utcnow
from tfstorage.index.tables import completed_uploads, upload_parts, upload_sessions
from tfstorage.index.transactions import MAX_PAGE, IndexStore
from tfstorage.index.writes import check_restore_quota

COMPLETION_LEASE = timedelta(minutes=15)


class UploadIndex(IndexStore):
    """Upload sessions and parts; one transaction per public method."""

    def create_session(self, session: UploadSession) -> None:
        def run(conn: Connection) -> None:
            bid = bucket_id(conn, session.bucket)  # NoSuchBucket
            # A declared size must fit the bucket's quota before any byte is sent.
            check_restore_quota(conn, bid, session.key, session.declared_size or 0)
            conn.execute(
                insert(upload_sessions).values(
                    upload_id=session.upload_id,
                    bucket=session.bucket,
                    key=session.key,
                    blob_id=session.blob_id,
                    backend_upload=session.backend_upload,
                    content_type=session.content_type,
                    user_metadata=session.metadata,
                    tags=session.tags,
                    declared_size=session.declared_size,
                    declared_sha256=session.declared_sha256,
                    part_size=session.part_size,
                    created_by=session.created_by,
                    created_at=session.created_at,
                    touched_at=session.touched_at,
                    object_lock=None if session.lock is None else session.lock.to_json(),
                    content_headers=session.content_headers or None,
                )
            )

        self._write(run)

    def get_session(self, upload_id: str) -> UploadSession:
        def run(conn: Connection) -> UploadSession:
            found = _session(conn, upload_id)
            if found is None:
                raise NoSuchUpload(upload_id)
            return found

        return self._read(run)

    def list_sessions(self, bucket: str | None, limit: int = MAX_PAGE) -> list[UploadSession]:
        """Open sessions (without their parts), oldest first."""

        def run(conn: Connection) -> list[UploadSession]:
            stmt = select(upload_sessions).order_by(
                upload_sessions.c.created_at, upload_sessions.c.upload_id
            )
            if bucket is not None:
                stmt = stmt.where(upload_sessions.c.bucket == bucket)
            return [_to_session(row, ()) for row in conn.execute(stmt.limit(limit))]

        return self._read(run)

    def page_sessions(
        self,
        bucket: str,
        *,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        limit: int,
    ) -> SessionPage:
        """Open sessions of a bucket by key, then upload id, after the markers (an upload
        id marker only counts with a key marker: later sessions of that key); keys that
        hold `delimiter` past `prefix` are rolled up into their common prefix."""
        limit = max(0, min(limit, MAX_PAGE))

        def run(conn: Connection) -> SessionPage:
            bucket_id(conn, bucket)  # NoSuchBucket
            entries: list[UploadSession | str] = []
            lower_key, lower_id = key_marker, upload_id_marker if key_marker else ""
            inclusive = False
            while len(entries) <= limit:
                batch = limit + 1 - len(entries)
                key = upload_sessions.c.key
                after = key >= lower_key if inclusive else key > lower_key
                if lower_id:
                    after = or_(
                        after,
                        and_(
                            upload_sessions.c.key == lower_key,
                            upload_sessions.c.upload_id > lower_id,
                        ),
                    )
                rows = conn.execute(
                    select(upload_sessions)
                    .where(
                        upload_sessions.c.bucket == bucket,
                        after,
                        *prefix_range(upload_sessions.c.key, prefix),
                    )
                    .order_by(upload_sessions.c.key, upload_sessions.c.upload_id)
                    .limit(batch)
                ).all()
                group: str | None = None
                for row in rows:
                    group = group_of(row.key, prefix, delimiter)
                    if group is None:
                        entries.append(_to_session(row, ()))
                    elif group > key_marker and (not entries or entries[-1] != group):
                        entries.append(group)
                    if len(entries) > limit:
                        break
                if len(rows) < batch or len(entries) > limit:
                    break
                if group is None:
                    lower_key, lower_id, inclusive = rows[-1].key, rows[-1].upload_id, False
                else:  # seek past the rest of the group in the index
                    skip = successor(group)
                    if skip is None:
                        break
                    lower_key, lower_id, inclusive = skip, "", True
            truncated = len(entries) > limit
            return SessionPage(entries[:limit], truncated)

        return self._read(run)

    def record_part(self, upload_id: str, part: UploadPart, *, max_size: int) -> UploadPart | None:
        """Make `part` the session's part of its number; returns the part it replaces.

        The session's total with this part is checked against `max_size`, the declared
        size and the bucket's quota here, under the bucket's lock, so that parallel parts
        cannot pass the checks together.
        """

        def run(conn: Connection) -> UploadPart | None:
            row = conn.execute(
                select(upload_sessions.c.bucket, upload_sessions.c.key).where(
                    upload_sessions.c.upload_id == upload_id
                )
            ).first()
            if row is None:
                raise NoSuchUpload(upload_id)
            bid = bucket_id(conn, row.bucket)
            check_restore_quota(conn, bid, row.key, 0)  # locks the bucket row first
            session = conn.execute(
                select(upload_sessions.c.declared_size, upload_sessions.c.completing_at)
                .where(upload_sessions.c.upload_id == upload_id)
                .with_for_update()
            ).first()
            if session is None:
                raise NoSuchUpload(upload_id)
            if _claimed(session.completing_at, part.stored_at):
                raise Conflict("the upload is being completed; parts can no longer change")
            others = conn.execute(
                select(func.coalesce(func.sum(upload_parts.c.size), 0)).where(
                    upload_parts.c.upload_id == upload_id,
                    upload_parts.c.part_number != part.part_number,
                )
            ).scalar_one()
            total = int(others) + part.size
            if total > max_size:
                raise EntityTooLarge(max_size)
            if session.declared_size is not None and total > session.declared_size:
                raise EntityTooLarge(session.declared_size)
            check_restore_quota(conn, bid, row.key, total)
            earlier = _parts(conn, upload_id, upload_parts.c.part_number == part.part_number)
            stmt = upsert(conn, upload_parts).values(
                upload_id=upload_id,
                part_number=part.part_number,
                size=part.size,
                md5=part.md5,
                sha256=part.sha256,
                handle=part.handle,
                stored_at=part.stored_at,
            )
            values = {name: stmt.excluded[name] for name in ("size", "md5", "sha256", "handle")}
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[upload_parts.c.upload_id, upload_parts.c.part_number],
                    set_={**values, "stored_at": stmt.excluded.stored_at},
                )
            )
            _touch(conn, upload_id, part.stored_at)
            return earlier[0] if earlier else None

        return self._write(run)

    def settle_part_size(self, upload_id: str, size: int) -> int:
        """The session's part size: `size` unless one was settled before (first wins)."""

        def run(conn: Connection) -> int:
            conn.execute(
                update(upload_sessions)
                .where(
                    upload_sessions.c.upload_id == upload_id,
                    upload_sessions.c.part_size.is_(None),
                )
                .values(part_size=size)
            )
            found = conn.execute(
                select(upload_sessions.c.part_size).where(upload_sessions.c.upload_id == upload_id)
            ).scalar_one_or_none()
            if found is None:
                raise NoSuchUpload(upload_id)
            return int(found)

        return self._write(run)

    def forget_part(self, upload_id: str, part_number: int) -> None:
        """Drop a part row whose bytes the blob store no longer holds as recorded."""
        self._write(
            lambda conn: conn.execute(
                delete(upload_parts).where(
                    upload_parts.c.upload_id == upload_id,
                    upload_parts.c.part_number == part_number,
                )
            )
        )

    def restart_parts(self, upload_id: str, backend_upload: str) -> None:
        """The blob store used the parts up (S3 completed its upload) and the result was
        refused: the session goes on with a fresh backend upload and no parts."""

        def run(conn: Connection) -> None:
            conn.execute(delete(upload_parts).where(upload_parts.c.upload_id == upload_id))
            conn.execute(
                update(upload_sessions)
                .where(upload_sessions.c.upload_id == upload_id)
                .values(backend_upload=backend_upload, touched_at=utcnow())
            )

        self._write(run)

    def claim(self, upload_id: str) -> None:
        """Take the session for one completion (409 while another one holds it)."""

        def run(conn: Connection) -> None:
            now = utcnow()
            row = conn.execute(
                select(upload_sessions.c.completing_at)
                .where(upload_sessions.c.upload_id == upload_id)
                .with_for_update()
            ).first()
            if row is None:
                raise NoSuchUpload(upload_id)
            if _claimed(row.completing_at, now):
                raise Conflict("the upload is already being completed by another request")
            conn.execute(
                update(upload_sessions)
                .where(upload_sessions.c.upload_id == upload_id)
                .values(completing_at=now, touched_at=now)
            )

        self._write(run)

    def renew_claim(self, upload_id: str) -> None:
        """The completion holding the claim is still at work: start its lease again."""
        now = utcnow()
        self._write(
            lambda conn: conn.execute(
                update(upload_sessions)
                .where(
                    upload_sessions.c.upload_id == upload_id,
                    upload_sessions.c.completing_at.is_not(None),
                )
                .values(completing_at=now, touched_at=now)
            )
        )

    def release(self, upload_id: str) -> None:
        """Give up a claim (the completion failed; the session goes on)."""
        self._write(
            lambda conn: conn.execute(
                update(upload_sessions)
                .where(upload_sessions.c.upload_id == upload_id)
                .values(completing_at=None, touched_at=utcnow())
            )
        )

    def closer(
        self, upload_id: str, backend_upload: str, parts_digest: str = ""
    ) -> Callable[[Connection, Sequence[CommitResult]], object]:
        """For ObjectIndex.commit_versions(then=...): delete the session in the commit's
        own transaction, refusing (and so rolling the commit back) if another request
        completed, aborted or restarted it meanwhile; and remember the completion (its
        part list by `parts_digest`, and the version made) for a client that retries."""

        def close(conn: Connection, results: Sequence[CommitResult] = ()) -> None:
            gone = conn.execute(
                delete(upload_sessions).where(
                    upload_sessions.c.upload_id == upload_id,
                    upload_sessions.c.backend_upload == backend_upload,
                )
            ).rowcount
            if gone != 1:
                raise NoSuchUpload(upload_id)
            conn.execute(delete(upload_parts).where(upload_parts.c.upload_id == upload_id))
            if results:
                conn.execute(
                    insert(completed_uploads).values(
                        upload_id=upload_id,
                        file_id=results[0].version.file_id,
                        parts_digest=parts_digest,
                        completed_at=utcnow(),
                    )
                )

        return close

    def completion(self, upload_id: str, parts_digest: str) -> str | None:
        """The file id a closed session's completion made, if it named these parts."""
        return self._read(
            lambda conn: conn.execute(
                select(completed_uploads.c.file_id).where(
                    completed_uploads.c.upload_id == upload_id,
                    completed_uploads.c.parts_digest == parts_digest,
                )
            ).scalar_one_or_none()
        )

    def forget_completions(self, before: datetime) -> int:
        """Completions older than `before` are not retried any more: forget them."""
        require_aware(before, "before")
        return self._write(
            lambda conn: (
                conn.execute(
                    delete(completed_uploads).where(completed_uploads.c.completed_at < before)
                ).rowcount
            )
        )

    def delete_session(
        self, upload_id: str, *, idle_before: datetime | None = None
    ) -> UploadSession:
        """Remove a session (abort, expiry) and return it, parts included. With
        `idle_before` (expiry), only if it is still idle: a part or a completion since
        the session was found idle keeps it (NoSuchUpload otherwise)."""

        def run(conn: Connection) -> UploadSession:
            found = _session(conn, upload_id, lock=True)
            if found is None:
                raise NoSuchUpload(upload_id)
            if idle_before is not None and found.touched_at >= idle_before:
                raise NoSuchUpload(upload_id)
            conn.execute(delete(upload_parts).where(upload_parts.c.upload_id == upload_id))
            conn.execute(delete(upload_sessions).where(upload_sessions.c.upload_id == upload_id))
            return found

        return self._write(run)

    def idle_sessions(self, before: datetime, limit: int = MAX_PAGE) -> list[str]:
        require_aware(before, "before")
        return self._read(
            lambda conn: list(
                conn.execute(
                    select(upload_sessions.c.upload_id)
                    .where(upload_sessions.c.touched_at < before)
                    .order_by(upload_sessions.c.touched_at)
                    .limit(limit)
                ).scalars()
            )
        )

    def live_backend_uploads(self) -> set[str]:
        """Every open session's blob store handle: what the sweep must spare."""
        return self._read(
            lambda conn: set(conn.execute(select(upload_sessions.c.backend_upload)).scalars())
        )


@dataclass(frozen=True, slots=True)
class SessionPage:
    entries: list[UploadSession | str]  # sessions (without parts) and common prefixes
    truncated: bool


def _claimed(completing_at: datetime | None, now: datetime) -> bool:
    # A claim left by a crashed instance runs out, so the client can complete again.
    return completing_at is not None and now - completing_at < COMPLETION_LEASE


def _touch(conn: Connection, upload_id: str, at: datetime) -> None:
    conn.execute(
        update(upload_sessions)
        .where(upload_sessions.c.upload_id == upload_id)
        .values(touched_at=at)
    )


def _session(conn: Connection, upload_id: str, *, lock: bool = False) -> UploadSession | None:
    stmt = select(upload_sessions).where(upload_sessions.c.upload_id == upload_id)
    row = conn.execute(stmt.with_for_update() if lock else stmt).first()
    if row is None:
        return None
    return _to_session(row, tuple(_parts(conn, upload_id)))


def _parts(conn: Connection, upload_id: str, *where: Any) -> list[UploadPart]:
    stmt = (
        select(upload_parts)
        .where(upload_parts.c.upload_id == upload_id, *where)
        .order_by(upload_parts.c.part_number)
    )
    return [
        UploadPart(
            part_number=row.part_number,
            size=row.size,
            md5=row.md5,
            sha256=row.sha256,
            handle=row.handle,
            stored_at=row.stored_at,
        )
        for row in conn.execute(stmt)
    ]


def _to_session(row: Any, parts: tuple[UploadPart, ...]) -> UploadSession:
    return UploadSession(
        upload_id=row.upload_id,
        bucket=row.bucket,
        key=row.key,
        blob_id=row.blob_id,
        backend_upload=row.backend_upload,
        content_type=row.content_type,
        metadata=dict(row.user_metadata or {}),
        tags=dict(row.tags or {}),
        declared_size=row.declared_size,
        declared_sha256=row.declared_sha256,
        part_size=row.part_size,
        created_by=row.created_by,
        created_at=row.created_at,
        touched_at=row.touched_at,
        parts=parts,
        lock=VersionLock.from_json(row.object_lock),
        content_headers=known_content_headers(row.content_headers),
    )
