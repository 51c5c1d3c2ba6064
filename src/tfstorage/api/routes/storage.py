"""Statistics, health and metrics."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tfstorage.api.audit import audit
from tfstorage.api.deps import CallerDep, StorageDep, authorize
from tfstorage.api.schemas import StoredText, iso
from tfstorage.api.usage import history_body, usage_body
from tfstorage.domain.caller import Caller
from tfstorage.domain.sizes import format_size
from tfstorage.service.stats import CounterCheck
from tfstorage.service.storage import Storage

router = APIRouter(tags=["storage"])


def _now() -> str:
    return iso(datetime.now(UTC))


@router.get("/api/v1/stats")
async def stats(storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """Totals, per bucket, used and free space, and what deduplication saved."""
    await authorize(storage, caller, "admin")
    s = await storage.stats.stats()
    total_objects = sum(u.objects for u in s.index.buckets.values())
    total_bytes = sum(u.bytes for u in s.index.buckets.values())
    free = s.capacity.free_bytes
    total = s.capacity.total_bytes
    used = s.index.stored_bytes
    saved = max(0, s.index.logical_bytes - s.index.stored_bytes)
    return {
        "total_buckets": len(s.index.buckets),
        "total_objects": total_objects,
        "total_size": format_size(total_bytes),
        "total_size_bytes": total_bytes,
        "buckets": {
            name: {
                "objects": u.objects,
                "size": format_size(u.bytes),
                "size_bytes": u.bytes,
                "versions": u.versions,
                "versions_size_bytes": u.version_bytes,
            }
            for name, u in sorted(s.index.buckets.items())
        },
        "storage_usage": {
            "used_space": format_size(used),
            "used_space_bytes": used,
            "free_space": format_size(free) if free is not None else None,
            "free_space_bytes": free,
            "total_space_bytes": total,
            "usage_percentage": round(100 * (total - free) / total, 1)
            if total and free is not None
            else None,
        },
        "dedup": {
            "logical_bytes": s.index.logical_bytes,
            "stored_bytes": s.index.stored_bytes,
            "saved_bytes": saved,
            "saved": format_size(saved),
            "blobs": s.index.blobs,
        },
    }


@router.get("/api/v1/storage/stats")
async def storage_stats(
    storage: StorageDep,
    caller: CallerDep,
    bucket: StoredText | None = None,
    top: Annotated[int, Query(description="how many of the largest objects")] = 10,
) -> dict[str, Any]:
    """The fields of `/api/v1/stats`, plus per bucket (versions, trash, quota use), per
    category, per owner, the largest objects, and the bytes dedup saves; `?bucket=`
    narrows it to one bucket. From the index alone, never a walk of the blob store."""
    await authorize(storage, caller, "admin")
    report = await storage.stats.report(bucket=bucket, top=top)
    return usage_body(report, bucket)


@router.get("/api/v1/storage/stats/history")
async def storage_stats_history(
    storage: StorageDep, caller: CallerDep, days: int = 30, bucket: StoredText | None = None
) -> dict[str, Any]:
    """One entry per day (1..365 days, oldest first) from the daily snapshots that the
    maintenance loop records."""
    await authorize(storage, caller, "admin")
    return history_body(days, bucket, await storage.stats.history(days, bucket))


def _counters_body(result: CounterCheck, seconds: float) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "repaired": result.repaired,
        "buckets": result.buckets,
        "differences": result.differences,
        "seconds": round(seconds, 3),
    }


@router.get("/api/v1/storage/counters")
async def check_counters(storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """Recompute the usage counters from the versions (a full scan: seconds at millions
    of objects) and compare; `differences` lists each bucket and category that disagrees."""
    await authorize(storage, caller, "admin")
    start = time.perf_counter()
    result = await storage.stats.check_counters()
    return _counters_body(result, time.perf_counter() - start)


@router.post("/api/v1/storage/counters/repair")
async def repair_counters(
    request: Request, storage: StorageDep, caller: CallerDep
) -> dict[str, Any]:
    """Rebuild the usage counters from a scan, while writes go on (on PostgreSQL they wait
    for it); `differences` says what was wrong before."""
    await authorize(storage, caller, "admin")
    start = time.perf_counter()
    result = await storage.stats.repair_counters()
    await audit(request, storage, caller, "repair_counters", differences=len(result.differences))
    return _counters_body(result, time.perf_counter() - start)


async def _health(storage: Storage, caller: Caller) -> tuple[bool, dict[str, Any]]:
    index = await storage.stats.check_index()
    blobs = await storage.stats.check_blobs()
    healthy = index.ok and blobs.ok
    body: dict[str, Any] = {
        "status": "healthy" if healthy else "unhealthy",
        "service": "storage",
        # The original service's field, kept for its clients. It never meant MinIO only:
        # "the blob store answers", whatever STORAGE_TYPE is (local disk included).
        # `blob_store_connected` says the same under a name that fits every backend.
        "minio_connected": blobs.ok,
        "blob_store_connected": blobs.ok,
        "index_connected": index.ok,
        "storage_type": storage.settings.storage_type,
        "blob_store": {**blobs.detail, "state": "up" if blobs.ok else "down"},
        "index": {**index.detail, "state": "up" if index.ok else "down"},
        "timestamp": _now(),
    }
    if not storage.access.enabled:
        body["warning"] = "AUTH_ENABLED=false: every caller has full rights"
    if caller.anonymous:
        # Open to load balancers, but without a token it says no more than up or down.
        body = {"status": body["status"], "service": "storage", "timestamp": body["timestamp"]}
    return healthy, body


@router.get("/health")
async def health(storage: StorageDep, caller: CallerDep) -> JSONResponse:
    """Service health; 503 when the index or the blob store cannot serve."""
    healthy, body = await _health(storage, caller)
    if healthy and not caller.anonymous:
        s = await storage.stats.stats()
        body["buckets_available"] = len(s.index.buckets)
        body["total_objects"] = sum(u.objects for u in s.index.buckets.values())
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/api/v1/storage/health")
async def storage_health(storage: StorageDep, caller: CallerDep) -> JSONResponse:
    """Health of the storage backends."""
    healthy, body = await _health(storage, caller)
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/api/v1/health/detailed")
async def detailed_health(storage: StorageDep, caller: CallerDep) -> JSONResponse:
    """Each check with its details: index, blob store, disk space, response time."""
    await authorize(storage, caller, "admin")
    start = time.perf_counter()
    index = await storage.stats.check_index()
    blobs = await storage.stats.check_blobs()
    disk = await storage.stats.check_disk()
    integrity = await storage.integrity.health()  # damaged blobs make it "degraded"
    elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
    healthy = index.ok and blobs.ok
    fine = disk.ok and integrity["ok"]
    status = "healthy" if healthy and fine else ("degraded" if healthy else "unhealthy")
    body = {
        "service": "storage",
        "status": status,
        "timestamp": _now(),
        "checks": {
            "index": {"ok": index.ok, **index.detail},
            "blob_store": {"ok": blobs.ok, **blobs.detail},
            "disk_space": {"ok": disk.ok, **disk.detail},
            "integrity": integrity,
            "response_time": {"ok": elapsed_ms < 1000, "ms": elapsed_ms},
        },
    }
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/api/v1/storage/metrics")
async def storage_metrics(storage: StorageDep, caller: CallerDep) -> dict[str, Any]:
    """The service's counters as JSON (the same numbers as `/metrics`)."""
    await authorize(storage, caller, "admin")
    await storage.stats.refresh_gauges()
    return {"timestamp": _now(), "metrics": storage.ctx.metrics.snapshot()}


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(storage: StorageDep, caller: CallerDep) -> Response:
    """Prometheus text exposition."""
    await authorize(storage, caller, "admin")
    await storage.stats.refresh_gauges()  # backends up, usage per bucket
    await storage.integrity.refresh_gauges()  # damaged blobs: every instance's findings
    return Response(storage.ctx.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.post("/api/v1/storage/replicate")
async def replicate(storage: StorageDep, caller: CallerDep, verify: bool = False) -> dict[str, Any]:
    """Bring the replica up to date (admin): the blobs whose copy failed, and with
    `verify=true` every primary blob the replica lacks or holds at another size."""
    await authorize(storage, caller, "admin")
    report = await storage.replicate(full=verify)
    return {"replica": report is not None, **(asdict(report) if report else {})}
