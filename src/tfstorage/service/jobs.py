"""Batch jobs: recorded in the index, run here, readable from any instance.

A running job writes its counters every HEARTBEAT_SECONDS; its `updated_at` is the
heartbeat. A job still "running" whose heartbeat is older than STALE_AFTER lost the
instance that ran it (killed, crashed) and is reported failed. A job "succeeded" when it
ran to its end, even if some keys failed (its `failed` count and `errors` say which);
"failed" means the job itself broke off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from tfstorage.domain.caller import Caller
from tfstorage.domain.jobs import FAILED, SUCCEEDED, Job, JobProgress
from tfstorage.domain.text import check_storable
from tfstorage.errors import StorageError
from tfstorage.index.jobs import JobIndex, NoSuchJob
from tfstorage.service.context import StorageContext

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
STALE_AFTER = timedelta(seconds=60)

JobWork = Callable[[JobProgress], Awaitable[None]]


class JobService:
    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        self._index = JobIndex(ctx.index.engine)
        # Strong references: the event loop keeps only weak ones to running tasks.
        self._background: set[asyncio.Task[Job]] = set()

    async def create(self, kind: str, caller: Caller, params: dict[str, Any]) -> Job:
        return await self._ctx.db(
            self._index.create_job,
            kind=kind,
            owner=caller.name,
            token_id=caller.token_id,
            params=params,
        )

    async def get(self, job_id: str, caller: Caller) -> Job:
        """The job, if this caller started it or is an admin; else the same 404 as for
        no job, so ids of other callers' jobs reveal nothing."""
        check_storable(job_id, "the job id")
        job = await self._ctx.db(self._index.get_job, job_id)
        if not caller.is_admin and (job.owner, job.token_id) != (caller.name, caller.token_id):
            raise NoSuchJob(f"job {job_id[:64]!r} does not exist")
        return job.as_seen_at(datetime.now(UTC), STALE_AFTER)

    async def run(
        self, job: Job, work: JobWork, progress: JobProgress, *, reraise: bool = False
    ) -> Job:
        """Run `work` to its end, writing its progress as it goes; returns the final job.
        With `reraise`, an error that broke the job off is raised once it is recorded."""
        async with anyio.create_task_group() as beats:
            beats.start_soon(self._heartbeat, job.job_id, progress)
            state, error = await self._attempt(job, work, progress)
            beats.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            final = await self._ctx.db(
                self._index.record_progress, job.job_id, progress, state=state
            )
        if reraise and error is not None:
            raise error
        return final

    async def _attempt(
        self, job: Job, work: JobWork, progress: JobProgress
    ) -> tuple[str, Exception | None]:
        try:
            await work(progress)
        except StorageError as exc:
            progress.errors.append({"code": exc.code, "error": exc.message})
            log.warning("job %s failed: %s", job.job_id, exc.message)
            return FAILED, exc
        except Exception as exc:
            progress.errors.append({"code": "InternalError", "error": "internal error"})
            log.exception("job %s failed", job.job_id)
            return FAILED, exc
        return SUCCEEDED, None

    def start(self, job: Job, work: JobWork, progress: JobProgress) -> None:
        """Run the job after the request has been answered."""
        task = asyncio.get_running_loop().create_task(self.run(job, work, progress))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _heartbeat(self, job_id: str, progress: JobProgress) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._ctx.db(self._index.record_progress, job_id, progress)
            except StorageError as exc:  # the next beat tries again
                log.warning("job %s: could not record progress: %s", job_id, exc.message)
