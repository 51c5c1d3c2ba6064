"""Batch delete and server-side copy of many keys, with per-key results.

Deletes go key by key through the index's own delete (the same rules as a single
delete, retention locks included), several at a time so that SQLite's group commit
and PostgreSQL's connection pool share the work. Copies make new versions that share
the source's blob (dedup: no bytes move), a page of keys per index transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from tfstorage.domain.caller import Caller
from tfstorage.domain.jobs import JobProgress
from tfstorage.domain.names import validate_bucket_name, validate_key, validate_prefix
from tfstorage.domain.records import Bucket, ObjectVersion
from tfstorage.errors import AccessDenied, InvalidArgument, StorageError
from tfstorage.index.batch import BatchIndex, CopyItem
from tfstorage.service.context import StorageContext
from tfstorage.service.writes import check_allowed_type

MAX_KEYS = 1000  # per keys-mode delete request
MAX_RESULTS = 1000  # per-key results kept for a prefix-mode delete
_LIST_PAGE = 1000
_COPY_BATCH = 100  # keys per index transaction
_DELETE_CONCURRENCY = 8

# Told, a page at a time, which versions a job deleted or created (for the audit log).
Recorder = Callable[[list[ObjectVersion]], Awaitable[None]]


@dataclass
class DeletePlan:
    bucket: str
    keys: list[str] | None  # None: every key under `prefix`
    prefix: str
    caller: Caller
    results: list[dict[str, Any]] = field(default_factory=list)
    results_truncated: bool = False
    record: Recorder | None = None


@dataclass
class CopyPlan:
    bucket: str
    prefix: str
    dest: Bucket
    dest_prefix: str
    overwrite: bool
    caller: Caller
    skipped: int = 0
    record: Recorder | None = None


class BatchService:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        self._batch = BatchIndex(ctx.index.engine)

    # delete ------------------------------------------------------------------------
    async def plan_delete(
        self, bucket: str, *, keys: list[str] | None, prefix: str | None, caller: Caller
    ) -> DeletePlan:
        validate_bucket_name(bucket)
        if (keys is None) == (prefix is None):
            raise InvalidArgument("give either keys or prefix, not both")
        if keys is not None and not 1 <= len(keys) <= MAX_KEYS:
            raise InvalidArgument(f"keys must list 1 to {MAX_KEYS} keys")
        if prefix is not None:
            validate_prefix(prefix)
        await self._ctx.db(self._ctx.index.get_bucket, bucket)
        return DeletePlan(bucket, keys, prefix or "", caller)

    async def run_delete(self, plan: DeletePlan, progress: JobProgress) -> None:
        if plan.keys is not None:
            progress.total = len(plan.keys)
            plan.results = await self._delete_keys(plan, plan.keys, progress)
            return
        progress.total = 0
        async for page in self._pages(plan.bucket, plan.prefix):
            progress.total += len(page)
            results = await self._delete_keys(plan, [v.key for v in page], progress)
            room = MAX_RESULTS - len(plan.results)
            plan.results.extend(results[:room])
            plan.results_truncated |= len(results) > room

    async def _delete_keys(
        self, plan: DeletePlan, keys: Sequence[str], progress: JobProgress
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{} for _ in keys]
        deleted: list[ObjectVersion] = []
        limiter = anyio.CapacityLimiter(_DELETE_CONCURRENCY)

        async def one(i: int, key: str) -> None:
            async with limiter:
                try:
                    if not isinstance(key, str):
                        raise InvalidArgument("keys must be strings")
                    validate_key(key)
                    if not plan.caller.allows("delete", plan.bucket, key):
                        raise AccessDenied(f"this token may not delete {plan.bucket}/{key}")
                    gone = await self._ctx.db(self._ctx.index.delete_key, plan.bucket, key)
                except StorageError as exc:
                    progress.fail(str(key), exc.status, exc.code, exc.message)
                    error = {"error": exc.message, "code": exc.code}
                    results[i] = {"key": key, "status": exc.status, "error": error}
                    return
                progress.done += 1
                progress.bytes += gone.size
                deleted.append(gone)
                results[i] = {"key": key, "status": 200, "file_id": gone.file_id}

        async with anyio.create_task_group() as tasks:
            for i, key in enumerate(keys):
                tasks.start_soon(one, i, key)
        if plan.record is not None and deleted:
            await plan.record(deleted)
        return results

    # copy --------------------------------------------------------------------------
    async def plan_copy(
        self,
        bucket: str,
        prefix: str,
        dest_bucket: str,
        dest_prefix: str,
        *,
        overwrite: bool,
        caller: Caller,
    ) -> CopyPlan:
        validate_bucket_name(bucket)
        validate_bucket_name(dest_bucket)
        validate_prefix(prefix)
        validate_prefix(dest_prefix)
        if bucket == dest_bucket and dest_prefix.startswith(prefix):
            # The copies would land under the prefix being listed: copied again, for ever.
            raise InvalidArgument("dest_prefix may not lie under prefix in the same bucket")
        await self._ctx.db(self._ctx.index.get_bucket, bucket)
        dest = await self._ctx.db(self._ctx.index.get_bucket, dest_bucket)
        return CopyPlan(bucket, prefix, dest, dest_prefix, overwrite, caller)

    async def run_copy(self, plan: CopyPlan, progress: JobProgress) -> None:
        progress.total = 0
        async for page in self._pages(plan.bucket, plan.prefix):
            progress.total += len(page)
            for start in range(0, len(page), _COPY_BATCH):
                await self._copy_batch(plan, page[start : start + _COPY_BATCH], progress)

    async def _copy_batch(
        self, plan: CopyPlan, sources: list[ObjectVersion], progress: JobProgress
    ) -> None:
        items: list[CopyItem] = []
        for source in sources:
            dest_key = plan.dest_prefix + source.key[len(plan.prefix) :]
            try:
                validate_key(dest_key)
                caller = plan.caller
                if not caller.allows("read", plan.bucket, source.key):
                    raise AccessDenied(f"this token may not read {plan.bucket}/{source.key}")
                if not caller.allows("write", plan.dest.name, dest_key):
                    raise AccessDenied(f"this token may not write {plan.dest.name}/{dest_key}")
                check_allowed_type(plan.dest, dest_key)
            except StorageError as exc:
                progress.fail(source.key, exc.status, exc.code, exc.message)
                continue
            items.append(CopyItem(source, plan.dest.name, dest_key, plan.overwrite, caller.name))
        if not items:
            return
        results = await self._ctx.db(self._batch.copy_versions, items)
        made: list[ObjectVersion] = []
        for item, result in zip(items, results, strict=True):
            if isinstance(result, StorageError):
                progress.fail(item.source.key, result.status, result.code, result.message)
            elif result is None:
                plan.skipped += 1
            else:
                progress.done += 1
                progress.bytes += item.source.size
                made.append(result.version)
        if plan.record is not None and made:
            await plan.record(made)

    # listing -----------------------------------------------------------------------
    async def _pages(self, bucket: str, prefix: str) -> AsyncIterator[list[ObjectVersion]]:
        """Latest live versions under `prefix`, a bounded page at a time."""
        marker = ""
        while True:
            listing = await self._ctx.db(
                self._ctx.index.list_objects, bucket, prefix=prefix, marker=marker, limit=_LIST_PAGE
            )
            if listing.objects:
                yield listing.objects
            if not listing.truncated or not listing.next_marker:
                return
            marker = listing.next_marker
