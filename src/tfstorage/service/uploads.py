"""Resumable multipart uploads: sessions, parts, completion, abort and expiry.

A session lives in the index (any instance sharing it can serve any of its requests),
its parts in the blob store (on S3: the engine's own multipart upload of the final blob,
so there is no second copy). Completion assembles the parts, hashes the whole object,
then commits it through the normal write path, closing the session in the same index
transaction: the object appears exactly when the session disappears.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterable, Awaitable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from tfstorage.blobs.base import DigestMismatch, StoredPart, new_blob_id
from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.filetypes import validate_content_type
from tfstorage.domain.metadata import validate_metadata
from tfstorage.domain.object_lock import VersionLock
from tfstorage.domain.uploads import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    UploadPart,
    UploadSession,
    assembled_layout,
    check_part_number,
    part_offset,
    parts_digest,
    select_parts,
    settles_part_size,
)
from tfstorage.errors import (
    BadDigest,
    EntityTooLarge,
    IncompleteBody,
    InvalidArgument,
    LengthRequired,
    NoSuchUpload,
    NoSuchVersion,
    ServiceUnavailable,
    StorageError,
)
from tfstorage.index.uploads import SessionPage, UploadIndex
from tfstorage.service.context import StorageContext
from tfstorage.service.hashing import HashingStream, parse_sha256
from tfstorage.service.writes import Checksums, ObjectWriter, StagedBlob, Target, WriteResult

log = logging.getLogger(__name__)

# A completion renews its claim this often: however long assembling and hashing take,
# no second completion starts while it runs (the claim runs out only if it died).
CLAIM_RENEWAL_SECONDS = 60.0


def new_upload_id() -> str:
    return secrets.token_hex(16)  # 32 hex characters, as `is_upload_id` expects


class UploadService:
    def __init__(self, ctx: StorageContext, index: UploadIndex, writer: ObjectWriter) -> None:
        self._ctx = ctx
        self._index = index
        self._writer = writer

    def part_limit(self, max_size: int | None = None) -> int:
        """The largest part: 5 GiB, and never more than the object may be."""
        return min(MAX_PART_SIZE, self._writer.limit(max_size))

    # sessions ------------------------------------------------------------------------
    async def create(
        self,
        bucket: str,
        key: str,
        *,
        content_type: str | None,
        metadata: dict[str, Any],
        tags: dict[str, str],
        size: int | None,
        sha256: str | None,
        created_by: str,
        max_size: int | None = None,
        part_size: int | None = None,
        lock: VersionLock | None = None,
        content_headers: dict[str, str] | None = None,
    ) -> UploadSession:
        """Validate as a single upload would, then open a session (no bytes yet).
        `part_size`: the client's promise that every part but the last has that size,
        which lets the blob store write parts in place (taken from part 1 otherwise)."""
        self._writer.check_declared_size(size, max_size)
        if part_size is not None and not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise InvalidArgument(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE}")
        content_type = validate_content_type(content_type)
        metadata = validate_metadata(metadata)
        declared_sha256 = parse_sha256(sha256)
        await self._writer.check_target(bucket, key)
        blob_id = new_blob_id()
        blobs = self._ctx.blobs
        backend_upload = await blobs.begin_multipart(blob_id)
        now = datetime.now(UTC)
        session = UploadSession(
            upload_id=new_upload_id(),
            bucket=bucket,
            key=key,
            blob_id=blob_id,
            backend_upload=backend_upload,
            content_type=content_type,
            metadata=metadata,
            tags=tags,
            declared_size=size,
            declared_sha256=declared_sha256,
            part_size=part_size,
            created_by=created_by,
            created_at=now,
            touched_at=now,
            lock=lock,
            content_headers=dict(content_headers or {}),
        )
        try:
            await self._ctx.db(self._index.create_session, session)
        except Exception:
            await self._abort_backend(session)
            raise
        return session

    async def get(self, upload_id: str) -> UploadSession:
        return await self._ctx.db(self._index.get_session, upload_id)

    async def list(self, bucket: str | None) -> list[UploadSession]:
        return await self._ctx.db(self._index.list_sessions, bucket)

    async def page(
        self,
        bucket: str,
        *,
        prefix: str = "",
        delimiter: str = "",
        key_marker: str = "",
        upload_id_marker: str = "",
        limit: int = 1000,
    ) -> SessionPage:
        return await self._ctx.db(
            self._index.page_sessions,
            bucket,
            prefix=prefix,
            delimiter=delimiter,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
            limit=limit,
        )

    async def abort(self, upload_id: str) -> UploadSession:
        """Forget the session, then remove its parts (index first, bytes later)."""
        session = await self._ctx.db(self._index.delete_session, upload_id)
        await self._abort_backend(session)
        return session

    # parts ---------------------------------------------------------------------------
    async def put_part(
        self,
        session: UploadSession,
        part_number: int,
        body: AsyncIterable[bytes],
        *,
        length: int | None,
        md5: str | None,
        sha256: str | None,
        max_size: int | None = None,
    ) -> UploadPart:
        """Store one part (replacing an earlier one of its number once it is whole and
        verified) and record it; the session's running total is checked as it grows."""
        check_part_number(part_number)
        if length is None:
            raise LengthRequired("a part upload needs a Content-Length header")
        limit = self.part_limit(max_size)
        if length > limit:
            raise EntityTooLarge(limit)
        self._check_total(session, part_number, length, max_size)
        if settles_part_size(session, length):
            settled = await self._ctx.db(self._index.settle_part_size, session.upload_id, length)
            session = replace(session, part_size=settled)
        stream = HashingStream(body, limit=limit, expected_size=length)
        try:
            stored = await self._ctx.blobs.put_part(
                session.blob_id,
                session.backend_upload,
                part_number,
                stream,
                size=length,
                md5=md5,
                sha256=sha256,
                offset=part_offset(session, part_number, length),
            )
        except NoSuchUpload:  # the engine's upload id: name the session's instead
            raise NoSuchUpload(session.upload_id) from None
        part = UploadPart(
            part_number=part_number,
            size=stored.size,
            md5=stream.md5,
            sha256=stream.sha256,
            handle=stored.handle,
            stored_at=datetime.now(UTC),
        )
        try:
            if not stream.finished or stored.size != stream.size:
                raise IncompleteBody("the part was not received whole")
            if md5 is not None and md5 != part.md5:
                raise BadDigest("the Content-MD5 sent does not match the part received")
            if sha256 is not None and sha256 != part.sha256:
                raise BadDigest("the X-Checksum-SHA256 sent does not match the part received")
            earlier = await self._ctx.db(
                self._index.record_part,
                session.upload_id,
                part,
                max_size=self._writer.limit(max_size),
            )
        except ServiceUnavailable:
            raise  # the index may have recorded it: the part stays
        except Exception:
            await self._discard_part(session, stored)
            raise
        self._ctx.metrics.bytes_in.inc(part.size)
        if earlier is not None and earlier.handle != part.handle:
            await self._discard_part(
                session, StoredPart(part_number, earlier.size, earlier.handle), replaced=True
            )
        return part

    def _check_total(
        self, session: UploadSession, part_number: int, length: int, max_size: int | None
    ) -> None:
        # Before any byte is read; checked again, race-free, when the part is recorded.
        others = sum(p.size for p in session.parts if p.part_number != part_number)
        limit = self._writer.limit(max_size)
        if others + length > limit:
            raise EntityTooLarge(limit)
        if session.declared_size is not None and others + length > session.declared_size:
            raise EntityTooLarge(session.declared_size)

    async def _discard_part(
        self, session: UploadSession, part: StoredPart, *, replaced: bool = False
    ) -> None:
        with anyio.CancelScope(shield=True):
            try:
                survived = await self._ctx.blobs.discard_part(
                    session.blob_id, session.backend_upload, part
                )
                if not survived and not replaced:
                    # The store replaced the recorded part in place: that record is wrong
                    # now, so it goes and the client sends the part again.
                    await self._ctx.db(self._index.forget_part, session.upload_id, part.part_number)
            except Exception:
                log.warning("could not discard part %s of upload %s", part.part_number,
                            session.upload_id)  # fmt: skip

    # completion ----------------------------------------------------------------------
    async def complete(
        self,
        upload_id: str,
        requested: Sequence[tuple[int, str]],
        *,
        sha256: str | None,
        created_by: str,
        condition: WriteCondition | None = None,
    ) -> WriteResult:
        """Assemble, verify and commit the object; the session closes with the commit.
        A failed `condition` (412) leaves the session open, as any refused completion.
        The same completion sent again after it succeeded (a client that lost the
        answer retries) answers the same version again; any other one, NoSuchUpload."""
        declared = parse_sha256(sha256)
        try:
            await self._ctx.db(self._index.claim, upload_id)
        except NoSuchUpload:
            return await self.completed(upload_id, requested)
        try:
            session = await self.get(upload_id)
            # Before assembling: a completion bound to fail costs no copy.
            await self._writer.precheck(session.bucket, session.key, condition)
            return await self._holding_claim(
                upload_id, self._complete(session, requested, declared, created_by, condition)
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await self._ctx.db(self._index.release, upload_id)
                except Exception:  # the lease runs out by itself
                    log.warning("could not release the completion claim of %s", upload_id)
            raise

    async def completed(self, upload_id: str, requested: Sequence[tuple[int, str]]) -> WriteResult:
        """What an earlier completion of this closed session with these parts made."""
        file_id = await self._ctx.db(self._index.completion, upload_id, parts_digest(requested))
        if file_id is None:
            raise NoSuchUpload(upload_id)
        try:
            version = await self._ctx.db(self._ctx.index.get_version, file_id)
        except NoSuchVersion:  # deleted since: nothing left to answer with
            raise NoSuchUpload(upload_id) from None
        return WriteResult(version, deduplicated=False)

    async def _holding_claim(self, upload_id: str, work: Awaitable[WriteResult]) -> WriteResult:
        """Await `work` while renewing the claim: the lease only bounds how long a claim
        left by a dead instance blocks the session, never how long a completion runs."""
        error: Exception | None = None
        async with anyio.create_task_group() as renewals:
            renewals.start_soon(self._renew_claim, upload_id)
            try:
                result = await work
            except Exception as exc:  # raised below, not wrapped in an exception group
                error = exc
            finally:
                renewals.cancel_scope.cancel()
        if error is not None:
            raise error
        return result

    async def _renew_claim(self, upload_id: str) -> None:
        while True:
            await anyio.sleep(CLAIM_RENEWAL_SECONDS)
            try:
                await self._ctx.db(self._index.renew_claim, upload_id)
            except Exception:  # the next renewal tries again
                log.warning("could not renew the completion claim of %s", upload_id)

    async def _complete(
        self,
        session: UploadSession,
        requested: Sequence[tuple[int, str]],
        declared: str | None,
        created_by: str,
        condition: WriteCondition | None,
    ) -> WriteResult:
        chosen = select_parts(session.parts, requested)
        total = sum(part.size for part in chosen)
        if session.declared_size is not None and total != session.declared_size:
            raise IncompleteBody(
                f"the parts hold {total} bytes but the upload declared {session.declared_size}"
            )
        declared = declared or session.declared_sha256
        blobs = self._ctx.blobs
        with self._ctx.metrics.time("complete_upload"):
            try:
                assembled = await blobs.complete_multipart(
                    session.blob_id,
                    session.backend_upload,
                    [StoredPart(p.part_number, p.size, p.handle) for p in chosen],
                    expected_sha256=declared,
                    block_size=self._ctx.settings.block_size,
                )
            except DigestMismatch as exc:
                # Nothing is visible; the session stays for a fixed retry, or an abort.
                if exc.parts_consumed:
                    await self._restart(session)
                    exc.message += "; the parts were used up: upload them again"
                raise
            staged = StagedBlob(
                session.blob_id,
                assembled.size,
                assembled.md5,
                assembled.sha256,
                time.time(),
                assembled.blocks,
            )
            try:
                target = Target(
                    staged,
                    session.bucket,
                    session.key,
                    session.content_type,
                    session.metadata,
                    session.tags,
                    Checksums(),
                    condition,
                    lock=session.lock,
                    parts=assembled_layout(chosen),
                    content_headers=session.content_headers,
                )
                # On a failure commit_all removes the assembled blob itself.
                [result] = await self._writer.commit_all(
                    [target],
                    created_by=created_by,
                    then=self._index.closer(
                        session.upload_id, session.backend_upload, parts_digest(requested)
                    ),
                )
            except ServiceUnavailable:
                raise  # the commit may have happened: leave everything for the sweeps
            except Exception as exc:
                if assembled.parts_consumed and not isinstance(exc, NoSuchUpload):
                    await self._restart(session)
                    if isinstance(exc, StorageError):  # say so, as for a digest mismatch
                        exc.message += "; the parts were used up: upload them again"
                raise
        await self._abort_backend(session)  # the parts (local disk) are no longer needed
        return result

    async def _restart(self, session: UploadSession) -> None:
        """The engine used the parts up and the object was refused: give the session a
        fresh engine upload, so it can be retried (its parts sent again) or aborted."""
        with anyio.CancelScope(shield=True):
            try:
                await self._ctx.blobs.abort_multipart(session.blob_id, session.backend_upload)
                backend_upload = await self._ctx.blobs.begin_multipart(session.blob_id)
                await self._ctx.db(self._index.restart_parts, session.upload_id, backend_upload)
            except Exception:
                log.warning("could not restart upload %s after a refused completion",
                            session.upload_id)  # fmt: skip

    async def _abort_backend(self, session: UploadSession) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._ctx.blobs.abort_multipart(session.blob_id, session.backend_upload)
            except Exception:  # not in the index any more: the incomplete sweep gets it
                log.warning("could not remove the parts of upload %s", session.upload_id)

    # maintenance ---------------------------------------------------------------------
    async def expire_idle(self, *, now: datetime | None = None) -> int:
        """Abort sessions idle longer than UPLOAD_SESSION_TTL_SECONDS; returns how many."""
        ttl = self._ctx.settings.upload_session_ttl_seconds
        cutoff = (now or datetime.now(UTC)) - timedelta(seconds=ttl)
        expired = 0
        while batch := await self._ctx.db(self._index.idle_sessions, cutoff, limit=100):
            for upload_id in batch:
                try:
                    session = await self._ctx.db(
                        self._index.delete_session, upload_id, idle_before=cutoff
                    )
                except NoSuchUpload:
                    continue  # completed, aborted or used again meanwhile
                await self._abort_backend(session)
                expired += 1
        if expired:
            log.info("expired %d idle upload sessions", expired)
        await self._ctx.db(self._index.forget_completions, cutoff)
        return expired

    async def live_backend_uploads(self) -> set[str]:
        return await self._ctx.db(self._index.live_backend_uploads)
