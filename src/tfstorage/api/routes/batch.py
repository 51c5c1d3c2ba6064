"""Routes: batch delete and copy, their jobs, and streamed archives of a prefix."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from tfstorage.api.audit import audit, audit_many
from tfstorage.api.conditions import refuse_condition
from tfstorage.api.deps import CallerDep, StorageDep, authorize, get_storage
from tfstorage.api.download import content_disposition
from tfstorage.api.schemas import StoredText
from tfstorage.domain.caller import Caller
from tfstorage.domain.jobs import Job, JobProgress
from tfstorage.domain.records import ObjectVersion
from tfstorage.index.tables import KEY_LENGTH
from tfstorage.service.archive import ArchiveService, entry_name
from tfstorage.service.batch import MAX_KEYS, BatchService, Recorder
from tfstorage.service.jobs import JobService, JobWork
from tfstorage.service.storage import Storage

router = APIRouter(prefix="/api/v1", tags=["batch"])

_WAIT = Query(description="false: answer 202 with the job id at once, run in the background")


class BatchDeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(max_length=63)
    keys: list[Annotated[StoredText, Field(max_length=KEY_LENGTH)]] | None = Field(
        default=None, max_length=MAX_KEYS
    )
    prefix: str | None = Field(default=None, max_length=KEY_LENGTH)


class BatchCopyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(max_length=63)
    prefix: str = Field(default="", max_length=KEY_LENGTH)
    dest_bucket: str = Field(max_length=63)
    dest_prefix: str = Field(default="", max_length=KEY_LENGTH)
    overwrite: bool = True


@dataclass
class _Services:
    storage: Storage
    batch: BatchService
    jobs: JobService
    archives: ArchiveService


def _services(request: Request) -> _Services:
    """Built once per app, over the app's storage (as `create_app` builds it)."""
    storage = get_storage(request)
    found: _Services | None = getattr(request.app.state, "batch_services", None)
    if found is None or found.storage is not storage:
        ctx = storage.ctx
        found = _Services(
            storage, BatchService(ctx), JobService(ctx), ArchiveService(ctx, storage.reader)
        )
        request.app.state.batch_services = found
    return found


def _recorder(request: Request, storage: Storage, caller: Caller, action: str) -> Recorder:
    """Each key a job deletes or copies gets its own audit entry, as a single one would."""

    async def record(done: list[ObjectVersion]) -> None:
        entries = [{"bucket": v.bucket, "key": v.key, "file_id": v.file_id} for v in done]
        await audit_many(request, storage, caller, action, entries)

    return record


def _job_body(job: Job) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat().replace("+00:00", "Z")

    return {
        "job_id": job.job_id,
        "kind": job.kind,
        "state": job.state,
        "params": job.params,
        "done": job.done,
        "total": job.total,
        "bytes": job.bytes,
        "failed": job.failed,
        "errors": job.errors,
        "created_at": when(job.created_at),
        "updated_at": when(job.updated_at),
        "finished_at": when(job.finished_at),
    }


async def _launch(
    request: Request,
    caller: Caller,
    kind: str,
    params: dict[str, Any],
    work: JobWork,
    *,
    wait: bool,
) -> tuple[Job, JobProgress] | JSONResponse:
    services = _services(request)
    job = await services.jobs.create(kind, caller, params)
    await audit(
        request, services.storage, caller, f"batch_{kind}",
        bucket=params.get("bucket"), job_id=job.job_id, params=params,
    )  # fmt: skip
    progress = JobProgress()
    if not wait:
        services.jobs.start(job, work, progress)
        return JSONResponse({"job_id": job.job_id, "state": job.state}, status_code=202)
    final = await services.jobs.run(job, work, progress, reraise=True)
    return final, progress


@router.post("/batch/delete", responses={202: {"description": "Started: see /jobs/{job_id}."}})
async def batch_delete(
    body: BatchDeleteRequest,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    wait: Annotated[bool, _WAIT] = True,
) -> Any:
    """Delete many keys (`keys`, at most 1000) or every key under `prefix`: each goes to
    the trash as a single delete does (restorable). Per-key results, in order (capped at
    1000 for a prefix, `results_truncated` then says so). A token confined to a prefix
    gets a per-key 403 for keys outside it, and may only name a prefix inside it."""
    # Keys mode checks each key on its own; a prefix must lie inside the token's prefix.
    scope_key = body.prefix if body.prefix is not None else caller.prefix or None
    await authorize(storage, caller, "delete", body.bucket, scope_key)
    refuse_condition(request, "on a batch delete (one ETag cannot name many keys)")
    batch = _services(request).batch
    plan = await batch.plan_delete(body.bucket, keys=body.keys, prefix=body.prefix, caller=caller)
    plan.record = _recorder(request, storage, caller, "delete")
    params: dict[str, Any] = {"bucket": body.bucket}
    if body.keys is not None:
        params["keys"] = len(body.keys)
    else:
        params["prefix"] = body.prefix

    async def work(progress: JobProgress) -> None:
        await batch.run_delete(plan, progress)

    launched = await _launch(request, caller, "delete", params, work, wait=wait)
    if isinstance(launched, JSONResponse):
        return launched
    job, progress = launched
    return {
        "job_id": job.job_id,
        "state": job.state,
        "deleted": progress.done,
        "failed": progress.failed,
        "bytes": progress.bytes,
        "results": plan.results,
        "results_truncated": plan.results_truncated,
    }


@router.post("/batch/copy", responses={202: {"description": "Started: see /jobs/{job_id}."}})
async def batch_copy(
    body: BatchCopyRequest,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    wait: Annotated[bool, _WAIT] = True,
) -> Any:
    """Copy the latest version of every key under `prefix` to `dest_prefix` + the rest of
    the key in `dest_bucket`, server-side: the copies share the stored bytes (no data
    moves). The destination's quota, allowed types and versioning apply; with
    `overwrite: false` existing destination keys are left alone (`skipped`): the
    conditional create (If-None-Match: *) of each destination, decided in the commit.
    One ETag cannot name many destinations, so the headers themselves are refused."""
    refuse_condition(request, "on a batch copy (use overwrite: false)")
    # A token confined to a prefix must name prefixes inside it (keys are checked too).
    await authorize(storage, caller, "read", body.bucket, body.prefix or None)
    await authorize(storage, caller, "write", body.dest_bucket, body.dest_prefix or None)
    batch = _services(request).batch
    plan = await batch.plan_copy(
        body.bucket,
        body.prefix,
        body.dest_bucket,
        body.dest_prefix,
        overwrite=body.overwrite,
        caller=caller,
    )
    plan.record = _recorder(request, storage, caller, "copy")
    params = body.model_dump()

    async def work(progress: JobProgress) -> None:
        await batch.run_copy(plan, progress)

    launched = await _launch(request, caller, "copy", params, work, wait=wait)
    if isinstance(launched, JSONResponse):
        return launched
    job, progress = launched
    return {
        "job_id": job.job_id,
        "state": job.state,
        "copied": progress.done,
        "skipped": plan.skipped,
        "failed": progress.failed,
        "bytes": progress.bytes,
        "errors": progress.errors,
    }


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, request: Request, caller: CallerDep) -> dict[str, Any]:
    """A batch job's progress; only its creator (or an admin) may read it. A job whose
    instance stopped sending heartbeats is reported `failed` (code JobLost)."""
    if caller.anonymous:
        await authorize(get_storage(request), caller, "read", None)
    return _job_body(await _services(request).jobs.get(job_id[:64], caller))


@router.get(
    "/archive/{bucket}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}, "application/x-tar": {}}}},
)
async def download_archive(
    bucket: str,
    request: Request,
    storage: StorageDep,
    caller: CallerDep,
    prefix: Annotated[str, Query(max_length=KEY_LENGTH)] = "",
    format: Annotated[Literal["zip", "tar"], Query()] = "zip",
) -> StreamingResponse:
    """The latest versions under `prefix` as one zip (ZIP64 when needed) or tar,
    streamed; entry names are relative to the prefix and safe to extract. An empty
    prefix gives an empty (valid) archive. A checksum failure cuts the stream."""
    await authorize(storage, caller, "read", bucket, prefix or None)
    archives = _services(request).archives
    await archives.check(bucket, prefix)
    await audit(request, storage, caller, "archive", bucket=bucket, prefix=prefix, format=format)
    stem = entry_name(prefix.rstrip("/"), "").replace("/", "-") if prefix.strip("/") else ""
    filename = f"{bucket}-{stem}.{format}" if stem else f"{bucket}.{format}"
    return StreamingResponse(
        archives.stream(bucket, prefix, format),
        media_type="application/zip" if format == "zip" else "application/x-tar",
        headers={
            "Content-Disposition": content_disposition(filename),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )
