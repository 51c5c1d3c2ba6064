"""The JSON bodies of the usage statistics and their history."""

from __future__ import annotations

from typing import Any

from tfstorage.api.schemas import iso
from tfstorage.domain.sizes import format_size
from tfstorage.domain.usage import BucketReport, DailyUsage, Tally, percent
from tfstorage.service.stats import StorageReport

MAX_OWNERS = 100  # the heaviest; the rest are summed under "(others)"


def usage_body(report: StorageReport, bucket: str | None) -> dict[str, Any]:
    usage, capacity = report.usage, report.capacity
    live = usage.total("live")
    free, total = capacity.free_bytes, capacity.total_bytes
    stored = usage.stored.bytes
    saved = usage.dedup_saved_bytes
    trash, noncurrent = usage.total("trash"), usage.total("noncurrent")
    return {
        # The fields of /api/v1/stats (the original service's names) ...
        "total_buckets": len(usage.buckets),
        "total_objects": live.count,
        "total_size": format_size(live.bytes),
        "total_size_bytes": live.bytes,
        "buckets": {name: _bucket(b) for name, b in usage.buckets.items()},
        "storage_usage": {
            "used_space": format_size(stored),
            "used_space_bytes": stored,
            "free_space": format_size(free) if free is not None else None,
            "free_space_bytes": free,
            "total_space_bytes": total,
            "usage_percentage": round(100 * (total - free) / total, 1)
            if total and free is not None
            else None,
        },
        # Index-wide whatever the filter: blobs are shared between buckets.
        "dedup": {
            "logical_bytes": usage.logical_bytes,
            "stored_bytes": stored,
            "saved_bytes": saved,
            "saved": format_size(saved),
            "blobs": usage.stored.count,
        },
        # ... and the analytics (issue 6).
        "bucket": bucket,
        "bucket_usage": {name: _bucket_usage(b) for name, b in usage.buckets.items()},
        "versions": _tally(usage.total("versions"), "versions"),
        "noncurrent": _tally(noncurrent, "versions"),
        "trash": {
            **_tally(trash, "versions"),
            "keys": sum(b.trashed_keys for b in usage.buckets.values()),
        },
        "categories": {name: _tally(t, "objects") for name, t in usage.categories.items()},
        "owners": _owners(usage.owners),
        "largest": [
            {
                "bucket": o.bucket,
                "key": o.key,
                "file_id": o.file_id,
                "size": o.size,
                "content_type": o.content_type,
                "created_by": o.created_by,
                "created_at": iso(o.created_at),
            }
            for o in usage.largest
        ],
    }


def _bucket(b: BucketReport) -> dict[str, Any]:
    return {
        "objects": b.live.count,
        "size": format_size(b.live.bytes),
        "size_bytes": b.live.bytes,
        "versions": b.versions.count,
        "versions_size_bytes": b.versions.bytes,
    }


def _bucket_usage(b: BucketReport) -> dict[str, Any]:
    noncurrent = b.noncurrent
    return {
        "objects": b.live.count,
        "bytes": b.live.bytes,
        "versions": b.versions.count,
        "version_bytes": b.versions.bytes,
        "noncurrent_versions": noncurrent.count,
        "noncurrent_bytes": noncurrent.bytes,
        "trash_versions": b.trash.count,
        "trash_bytes": b.trash.bytes,
        "deleted_keys": b.trashed_keys,
        "quota": {
            "bytes": b.quota_bytes,
            "objects": b.quota_objects,
            "bytes_used_percent": percent(b.live.bytes, b.quota_bytes),
            "objects_used_percent": percent(b.live.count, b.quota_objects),
        },
    }


def _tally(t: Tally, noun: str) -> dict[str, int]:
    return {noun: t.count, "bytes": t.bytes}


def _owners(owners: dict[str, Tally]) -> dict[str, dict[str, int]]:
    items = list(owners.items())  # heaviest first
    out = {name: _tally(t, "versions") for name, t in items[:MAX_OWNERS]}
    rest = Tally()
    for _, t in items[MAX_OWNERS:]:
        rest = rest + t
    if rest.count:
        out["(others)"] = _tally(rest, "versions")
    return out


def history_body(days: int, bucket: str | None, history: list[DailyUsage]) -> dict[str, Any]:
    return {"days": days, "bucket": bucket, "history": [_day(d) for d in history]}


def _day(d: DailyUsage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "date": d.day.isoformat(),
        "objects": d.objects,
        "bytes": d.bytes,
        "versions": d.versions,
        "version_bytes": d.version_bytes,
    }
    if d.stored_bytes is not None:  # an index-wide row
        body.update(
            noncurrent_bytes=d.noncurrent_bytes,
            trash_bytes=d.trash_bytes,
            stored_bytes=d.stored_bytes,
            blobs=d.blobs,
            buckets={name: _day(b) for name, b in d.buckets.items()},
        )
    return body
