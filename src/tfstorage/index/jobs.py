"""Batch jobs in the index, so that any instance can answer for any job."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.engine import Row

from tfstorage.domain.jobs import RUNNING, Job, JobProgress
from tfstorage.errors import NotFound
from tfstorage.index.reads import require_aware, utcnow
from tfstorage.index.tables import batch_jobs
from tfstorage.index.transactions import IndexStore


class NoSuchJob(NotFound):
    code = "NoSuchJob"
    default_message = "the job does not exist"


def _job(row: Row[Any]) -> Job:
    return Job(
        job_id=row.job_id,
        kind=row.kind,
        state=row.state,
        owner=row.owner,
        token_id=row.token_id,
        params=dict(row.params),
        total=row.total,
        done=row.done,
        failed=row.failed,
        bytes=row.bytes,
        errors=list(row.errors),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


class JobIndex(IndexStore):
    def create_job(
        self, *, kind: str, owner: str, token_id: str | None, params: dict[str, Any]
    ) -> Job:
        job_id = secrets.token_hex(16)
        now = utcnow()

        def run(conn: Connection) -> Job:
            conn.execute(
                insert(batch_jobs).values(
                    job_id=job_id,
                    kind=kind,
                    state=RUNNING,
                    owner=owner,
                    token_id=token_id,
                    params=params,
                    total=None,
                    done=0,
                    failed=0,
                    bytes=0,
                    errors=[],
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                )
            )
            return _get(conn, job_id)

        return self._write(run)

    def record_progress(self, job_id: str, progress: JobProgress, *, state: str = RUNNING) -> Job:
        """Write the counters (and the heartbeat); a state other than running ends it."""
        now = utcnow()
        values: dict[str, Any] = {
            "total": progress.total,
            "done": progress.done,
            "failed": progress.failed,
            "bytes": progress.bytes,
            "errors": list(progress.errors),
            "state": state,
            "updated_at": now,
        }
        if state != RUNNING:
            values["finished_at"] = now

        def run(conn: Connection) -> Job:
            # Only a running job moves: one reported lost and finished elsewhere stays so.
            conn.execute(
                update(batch_jobs)
                .where(batch_jobs.c.job_id == job_id, batch_jobs.c.state == RUNNING)
                .values(**values)
            )
            return _get(conn, job_id)

        return self._write(run)

    def get_job(self, job_id: str) -> Job:
        return self._read(lambda conn: _get(conn, job_id))

    def purge_jobs(self, finished_before: datetime) -> int:
        require_aware(finished_before, "finished_before")
        return self._write(
            lambda conn: (
                conn.execute(
                    delete(batch_jobs).where(batch_jobs.c.finished_at < finished_before)
                ).rowcount
            )
        )


def _get(conn: Connection, job_id: str) -> Job:
    row = conn.execute(select(batch_jobs).where(batch_jobs.c.job_id == job_id)).first()
    if row is None:
        raise NoSuchJob(f"job {job_id[:64]!r} does not exist")
    return _job(row)
