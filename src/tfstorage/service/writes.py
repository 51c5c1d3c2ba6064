"""The write path (DESIGN.md): validate, stream + hash into a new blob, verify, commit."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from tfstorage.blobs.base import BlobNotFound, new_blob_id
from tfstorage.domain.blocks import BlockChecksums
from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.filetypes import guess_content_type, is_allowed, validate_content_type
from tfstorage.domain.names import validate_bucket_name, validate_key
from tfstorage.domain.object_lock import VersionLock
from tfstorage.domain.records import Bucket, NewVersion, ObjectVersion
from tfstorage.domain.uploads import PartLayout
from tfstorage.errors import (
    BadDigest,
    EntityTooLarge,
    NoSuchKey,
    RequestTimeout,
    ServiceUnavailable,
    StorageError,
    UnsupportedFileType,
)
from tfstorage.service.context import StorageContext
from tfstorage.service.hashing import HashingStream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StagedBlob:
    """Bytes that are durable in the blob store but not yet visible in the index."""

    blob_id: str
    size: int
    md5: str
    sha256: str
    stored_at: float = 0.0  # time.time() when the blob became durable
    blocks: BlockChecksums | None = None  # computed in the same pass as the digests


@dataclass(frozen=True, slots=True)
class Checksums:
    """Digests the client declared (hex), verified after the bytes are stored."""

    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where a staged blob goes, and what the client said about it."""

    staged: StagedBlob
    bucket: str
    key: str
    content_type: str | None
    metadata: dict[str, Any]
    tags: dict[str, str]
    checksums: Checksums
    condition: WriteCondition | None = None  # If-Match / If-None-Match
    parts: PartLayout | None = None  # assembled from parts: how it was cut
    lock: VersionLock | None = None  # retention / legal hold asked for with the version
    content_headers: dict[str, str] = field(default_factory=dict)  # Cache-Control...


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: ObjectVersion
    deduplicated: bool


def check_allowed_type(record: Bucket, key: str) -> None:
    if not is_allowed(key, record.allowed_types):
        allowed = ", ".join(record.allowed_types or ())
        raise UnsupportedFileType(
            f"file type of {key.rsplit('/', 1)[-1]!r} is not allowed in bucket"
            f" {record.name!r} (allowed: {allowed})"
        )


class ObjectWriter:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx

    @property
    def max_size(self) -> int:
        return self._ctx.settings.max_file_size

    def limit(self, max_size: int | None = None) -> int:
        """MAX_FILE_SIZE, or a smaller limit of this request (a presigned upload's)."""
        return self.max_size if max_size is None else min(max_size, self.max_size)

    def check_declared_size(self, size: int | None, max_size: int | None = None) -> None:
        """Refuse a declared length over the limit before reading any of the body."""
        limit = self.limit(max_size)
        if size is not None and size > limit:
            raise EntityTooLarge(limit)

    async def check_target(self, bucket: str, key: str) -> Bucket:
        """Validate names, bucket existence and the bucket's allowed file types."""
        validate_bucket_name(bucket)
        validate_key(key)
        record = await self._ctx.bucket_cache.get(bucket)
        check_allowed_type(record, key)
        return record

    async def precheck(self, bucket: str, key: str, condition: WriteCondition | None) -> None:
        """Refuse with 412 before any byte is read when the precondition already fails.
        Only a shortcut: the commit judges the condition again, inside the transaction
        that moves the key's head, which is what makes it race-free."""
        if condition is None:
            return
        try:
            latest = await self._ctx.db(self._ctx.index.resolve_latest, bucket, key)
        except NoSuchKey:
            latest = None
        if latest is None:
            condition.check(None)
        else:
            condition.check(latest.etag, latest.parts_etag)

    async def stage(
        self,
        body: AsyncIterable[bytes],
        *,
        declared_size: int | None = None,
        max_size: int | None = None,
    ) -> StagedBlob:
        """Stream `body` into a new blob, hashing it; durable when this returns."""
        self.check_declared_size(declared_size, max_size)
        stream = HashingStream(
            body,
            limit=self.limit(max_size),
            expected_size=declared_size,
            block_size=self._ctx.settings.block_size,
        )
        blob_id = new_blob_id()
        size = await self._ctx.blobs.put(blob_id, stream)
        if not stream.finished or size != stream.size:  # a backend that stopped reading early
            await self.discard(blob_id)
            raise RuntimeError("blob store did not consume the whole stream")
        self._ctx.metrics.bytes_in.inc(size)
        return StagedBlob(blob_id, size, stream.md5, stream.sha256, time.time(), stream.blocks)

    async def discard(self, blob_id: str) -> None:
        # Shielded: a request cancelled mid-cleanup must still remove what it wrote.
        with anyio.CancelScope(shield=True):
            try:
                await self._ctx.blobs.delete(blob_id)
            except Exception:  # the orphan sweep gets it; the request's error matters more
                log.warning("could not remove staged blob %s; left for the orphan sweep", blob_id)

    async def commit(
        self,
        staged: StagedBlob,
        *,
        bucket: str,
        key: str,
        content_type: str | None,
        metadata: dict[str, Any],
        tags: dict[str, str],
        checksums: Checksums,
        created_by: str,
        condition: WriteCondition | None = None,
        lock: VersionLock | None = None,
        content_headers: dict[str, str] | None = None,
    ) -> WriteResult:
        """Verify client checksums, then make the version visible in one transaction.

        On any failure the staged blob is removed and nothing is recorded.
        """
        target = Target(
            staged,
            bucket,
            key,
            content_type,
            metadata,
            tags,
            checksums,
            condition,
            lock=lock,
            content_headers=dict(content_headers or {}),
        )
        return (await self.commit_all([target], created_by=created_by))[0]

    async def commit_all(
        self,
        targets: list[Target],
        *,
        created_by: str,
        then: Callable[[Any, Any], object] | None = None,
    ) -> list[WriteResult]:
        """Make several staged blobs visible in one index transaction: all, or none.
        `then(connection)` runs last inside that transaction (see ObjectIndex)."""
        blob_ids = [t.staged.blob_id for t in targets]
        try:
            news = [self._new_version(t, created_by) for t in targets]
        except Exception:
            for blob_id in blob_ids:
                await self.discard(blob_id)
            raise
        try:
            results = await self._ctx.index.commit_versions_async(news, then=then)
        except ServiceUnavailable:
            # The connection failed; the COMMIT may have happened. The blobs stay, and
            # the orphan sweep (which consults the index first) removes them if not.
            raise
        except Exception:
            # The transaction did not commit. (On cancellation the blobs stay too.)
            for blob_id in blob_ids:
                await self.discard(blob_id)
            raise
        out = []
        for target, result in zip(targets, results, strict=True):
            if result.duplicate_blob_id is not None:
                await self._heal(result.version, target.staged)
                await self.discard(result.duplicate_blob_id)
            self._ctx.metrics.uploads.labels(bucket=target.bucket).inc()
            out.append(WriteResult(result.version, result.duplicate_blob_id is not None))
        return out

    async def commit_each(
        self, targets: list[Target], *, created_by: str
    ) -> list[WriteResult | StorageError]:
        """Make each staged blob visible on its own, all in one index transaction: the
        ones refused (bad digest, quota) are reported in place and their blobs removed."""
        news: list[NewVersion | StorageError] = []
        for target in targets:
            try:
                news.append(self._new_version(target, created_by))
            except StorageError as exc:
                news.append(exc)
        valid = [n for n in news if isinstance(n, NewVersion)]
        try:
            committed = await self._ctx.index.commit_versions_each_async(valid) if valid else []
        except ServiceUnavailable:
            raise  # the COMMIT may have happened: the blobs stay for the orphan sweep
        except Exception:
            for target in targets:
                await self.discard(target.staged.blob_id)
            raise
        answers = iter(committed)
        out: list[WriteResult | StorageError] = []
        for target, new in zip(targets, news, strict=True):
            result = next(answers) if isinstance(new, NewVersion) else new
            if isinstance(result, StorageError):
                await self.discard(target.staged.blob_id)
                out.append(result)
                continue
            if result.duplicate_blob_id is not None:
                await self._heal(result.version, target.staged)
                await self.discard(result.duplicate_blob_id)
            self._ctx.metrics.uploads.labels(bucket=target.bucket).inc()
            out.append(WriteResult(result.version, result.duplicate_blob_id is not None))
        return out

    async def _heal(self, version: ObjectVersion, fresh: StagedBlob) -> None:
        """Dedup pointed a new `version` at stored bytes: if those are missing, of the
        wrong size, or failed a checksum on read, rewrite them from the fresh copy
        (same SHA-256, so readers see the same content either way), and clear the
        blob's damage mark. The version's damage was read in its commit."""
        blobs = self._ctx.blobs
        stored_id = version.blob_id
        try:
            healthy = version.damage is None and (await blobs.stat(stored_id)).size == fresh.size
        except BlobNotFound:
            healthy = False
        if healthy:
            return
        log.warning("rewriting damaged blob %s from a new upload of the same content", stored_id)
        source = await blobs.open(fresh.blob_id)
        try:
            await blobs.put(stored_id, source)
        finally:
            await source.aclose()
        # The fresh bytes hashed to the same SHA-256 on their way in: the copy is good.
        await self._ctx.db(self._ctx.integrity.mark_verified, stored_id)

    def _new_version(self, t: Target, created_by: str) -> NewVersion:
        staged = t.staged
        if t.checksums.md5 is not None and t.checksums.md5 != staged.md5:
            raise BadDigest("the Content-MD5 sent does not match the data received")
        if t.checksums.sha256 is not None and t.checksums.sha256 != staged.sha256:
            raise BadDigest("the X-Checksum-SHA256 sent does not match the data received")
        grace = self._ctx.settings.orphan_grace_seconds
        if grace and time.time() - staged.stored_at > grace / 2:
            # Past half the grace period the orphan sweep may take the blob before it is
            # referenced; refusing is the only answer that cannot turn into lost bytes.
            raise RequestTimeout("the upload took too long to complete; send it again")
        return NewVersion(
            bucket=t.bucket,
            key=t.key,
            blob_id=staged.blob_id,
            size=staged.size,
            md5=staged.md5,
            sha256=staged.sha256,
            content_type=validate_content_type(t.content_type) or guess_content_type(t.key),
            metadata=t.metadata,
            tags=t.tags,
            created_by=created_by,
            condition=t.condition,
            blocks=staged.blocks,
            parts=t.parts,
            lock=t.lock,
            content_headers=t.content_headers,
        )

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: AsyncIterable[bytes],
        *,
        declared_size: int | None,
        content_type: str | None,
        metadata: dict[str, Any],
        tags: dict[str, str],
        checksums: Checksums,
        created_by: str,
        max_size: int | None = None,
        condition: WriteCondition | None = None,
        lock: VersionLock | None = None,
        content_headers: dict[str, str] | None = None,
    ) -> WriteResult:
        """The whole write path for a body whose target is known up front."""
        self.check_declared_size(declared_size, max_size)
        validate_content_type(content_type)
        await self.check_target(bucket, key)
        await self.precheck(bucket, key, condition)
        with self._ctx.metrics.time("put_object"):
            staged = await self.stage(body, declared_size=declared_size, max_size=max_size)
            return await self.commit(
                staged,
                bucket=bucket,
                key=key,
                content_type=content_type,
                metadata=metadata,
                tags=tags,
                checksums=checksums,
                created_by=created_by,
                condition=condition,
                lock=lock,
                content_headers=content_headers,
            )
