"""Usage analytics, and the daily snapshots of them.

Live, held and trashed figures per bucket and category, per bucket and owner, and the
stored blobs come from the usage counters (revision 0011, index/usage.py): a few rows
per bucket (and owner) at any size. One part stays a query: the largest objects, the
size index walked from the top with one head probe per candidate (bounded by `top` when
the largest are live, as they usually are).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Select, exists, func, select

from tfstorage.domain.categories import CATEGORIES, Category, in_bucket
from tfstorage.domain.usage import BucketReport, DailyUsage, LargeObject, Tally, UsageReport
from tfstorage.index.reads import bucket_id, upsert
from tfstorage.index.tables import (
    bucket_usage_daily,
    buckets,
    object_keys,
    usage_daily,
    versions,
)
from tfstorage.index.transactions import IndexStore
from tfstorage.index.usage import TRASHED_KEYS, read_blobs, read_counters, read_owners

MAX_LARGEST = 100


def usage_report(conn: Connection, *, bucket: str | None = None, top: int = 10) -> UsageReport:
    only = bucket_id(conn, bucket) if bucket is not None else None
    if conn.dialect.name == "postgresql":
        # One hash of a million heads fits in memory instead of spilling in batches.
        conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    rows = conn.execute(
        select(buckets.c.id, buckets.c.name, buckets.c.quota_bytes, buckets.c.quota_objects)
    )
    names = {row.id: row for row in rows if only is None or row.id == only}

    def scoped(stmt: Select[Any], column: Any) -> Select[Any]:
        return stmt if only is None else stmt.where(column == only)

    # Live, held and trashed figures per bucket and category, and the blobs: the usage
    # counters (index/usage.py), a few rows per bucket whatever the index holds.
    counted = read_counters(conn, only)
    live: dict[int, Tally] = {}
    held: dict[int, Tally] = {}
    trash: dict[int, Tally] = {}
    trashed_keys: dict[int, int] = {}
    categories = dict.fromkeys(CATEGORIES, Tally())
    for (bid, raw), figures in counted.items():
        if bid not in names:
            continue
        tally = Tally(figures.objects, figures.bytes)
        live[bid] = live.get(bid, Tally()) + tally
        held[bid] = held.get(bid, Tally()) + Tally(figures.versions, figures.version_bytes)
        trash[bid] = trash.get(bid, Tally()) + Tally(figures.trash_versions, figures.trash_bytes)
        trashed_keys[bid] = trashed_keys.get(bid, 0) + figures.trashed_keys
        if raw != TRASHED_KEYS:
            category = in_bucket(_category(raw), names[bid].name)
            categories[category] = categories[category] + tally

    owners: dict[str, Tally] = {}
    for (bid, owner), (n, size) in read_owners(conn, only).items():
        if bid in names:
            owners[owner] = owners.get(owner, Tally()) + Tally(n, size)

    # Blobs no version references any more only wait for garbage collection.
    blob_figures = read_blobs(conn)
    everything = counted if only is None else read_counters(conn)
    logical = sum(figures.version_bytes for figures in everything.values())
    reports = {
        row.name: BucketReport(
            live=live.get(bid, Tally()),
            versions=held.get(bid, Tally()),
            trash=trash.get(bid, Tally()),
            trashed_keys=trashed_keys.get(bid, 0),
            quota_bytes=row.quota_bytes,
            quota_objects=row.quota_objects,
        )
        for bid, row in names.items()
    }
    return UsageReport(
        buckets=dict(sorted(reports.items())),
        categories=categories,
        owners=dict(sorted(owners.items(), key=lambda item: (-item[1].bytes, item[0]))),
        largest=_largest(conn, only, max(0, min(top, MAX_LARGEST))),
        stored=Tally(blob_figures.referenced, blob_figures.referenced_bytes),
        logical_bytes=int(logical),
    )


def _is_live_head() -> Any:
    return exists().where(
        object_keys.c.current_id == versions.c.id, object_keys.c.deleted_at.is_(None)
    )


def _count() -> Any:
    return func.count().label("n")


def _bytes(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0).label("size")


def _category(value: str) -> Category:
    return value if value in CATEGORIES else "other"


def _largest(conn: Connection, only: int | None, top: int) -> list[LargeObject]:
    if top == 0:
        return []
    stmt = (
        select(
            buckets.c.name,
            versions.c.id,
            versions.c.key,
            versions.c.file_id,
            versions.c.size,
            versions.c.content_type,
            versions.c.created_by,
            versions.c.created_at,
        )
        .select_from(versions.join(buckets, buckets.c.id == versions.c.bucket_id))
        .where(_is_live_head())
        .order_by(versions.c.size.desc(), versions.c.id.desc())
        .limit(top)
    )
    if only is None:
        # Walks ix_versions_size from the top; each candidate is one probe of its head.
        rows = list(conn.execute(stmt))
    else:
        # One bucket: the top of each category, each a walk down
        # ix_versions_bucket_id_category_size (a bucket-only filter on the size index
        # would read every larger version of the other buckets first).
        rows = []
        for category in CATEGORIES:
            where = (versions.c.bucket_id == only, versions.c.category == category)
            rows.extend(conn.execute(stmt.where(*where)))
        rows = sorted(rows, key=lambda row: (row.size, row.id), reverse=True)[:top]
    return [
        LargeObject(
            bucket=row.name,
            key=row.key,
            file_id=row.file_id,
            size=int(row.size),
            content_type=row.content_type,
            created_by=row.created_by,
            created_at=row.created_at,
        )
        for row in rows
    ]


# daily snapshots ---------------------------------------------------------------------


def record_snapshot(conn: Connection, day: date, report: UsageReport, now: datetime) -> None:
    """Upsert `day`'s rows: idempotent, and several instances may race (last one wins)."""
    live, held = report.total("live"), report.total("versions")
    values: dict[str, Any] = {
        "objects": live.count,
        "bytes": live.bytes,
        "versions": held.count,
        "version_bytes": held.bytes,
        "noncurrent_bytes": report.total("noncurrent").bytes,
        "trash_bytes": report.total("trash").bytes,
        "stored_bytes": report.stored.bytes,
        "blobs": report.stored.count,
        "taken_at": now,
    }
    stmt = upsert(conn, usage_daily).values(day=day, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[usage_daily.c.day], set_=values))
    for name, bucket in report.buckets.items():
        per_bucket: dict[str, Any] = {
            "objects": bucket.live.count,
            "bytes": bucket.live.bytes,
            "versions": bucket.versions.count,
            "version_bytes": bucket.versions.bytes,
            "taken_at": now,
        }
        row = upsert(conn, bucket_usage_daily).values(day=day, bucket=name, **per_bucket)
        conn.execute(
            row.on_conflict_do_update(
                index_elements=[bucket_usage_daily.c.day, bucket_usage_daily.c.bucket],
                set_=per_bucket,
            )
        )


def usage_history(conn: Connection, since: date, bucket: str | None = None) -> list[DailyUsage]:
    """The days from `since` on, oldest first; with `bucket`, that bucket's figures."""
    per_day: dict[date, dict[str, DailyUsage]] = {}
    stmt = select(bucket_usage_daily).where(bucket_usage_daily.c.day >= since)
    if bucket is not None:
        stmt = stmt.where(bucket_usage_daily.c.bucket == bucket)
    for row in conn.execute(stmt.order_by(bucket_usage_daily.c.day, bucket_usage_daily.c.bucket)):
        per_day.setdefault(row.day, {})[row.bucket] = _day(row)
    if bucket is not None:
        return [days[bucket] for _, days in sorted(per_day.items())]
    rows = conn.execute(
        select(usage_daily).where(usage_daily.c.day >= since).order_by(usage_daily.c.day)
    ).all()
    return [
        DailyUsage(
            day=row.day,
            objects=int(row.objects),
            bytes=int(row.bytes),
            versions=int(row.versions),
            version_bytes=int(row.version_bytes),
            noncurrent_bytes=int(row.noncurrent_bytes),
            trash_bytes=int(row.trash_bytes),
            stored_bytes=int(row.stored_bytes),
            blobs=int(row.blobs),
            buckets=per_day.get(row.day, {}),
        )
        for row in rows
    ]


def _day(row: Any) -> DailyUsage:
    return DailyUsage(
        day=row.day,
        objects=int(row.objects),
        bytes=int(row.bytes),
        versions=int(row.versions),
        version_bytes=int(row.version_bytes),
    )


class AnalyticsIndex(IndexStore):
    """The usage report and the daily snapshots, one transaction per call."""

    def usage_report(self, *, bucket: str | None = None, top: int = 10) -> UsageReport:
        return self._read(lambda conn: usage_report(conn, bucket=bucket, top=top))

    def record_snapshot(self, day: date, report: UsageReport, now: datetime) -> None:
        self._write(lambda conn: record_snapshot(conn, day, report, now))

    def usage_history(self, since: date, bucket: str | None = None) -> list[DailyUsage]:
        return self._read(lambda conn: usage_history(conn, since, bucket))
