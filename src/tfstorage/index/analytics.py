"""Usage analytics by aggregate queries, and the daily snapshots of them.

Computed from the index at request time, not kept in counters: no write path (nor a
future one) can forget to update them, and no counter row becomes a lock every upload
to a bucket must take. What keeps it fast at millions of versions (revision 0007):
`versions.category`, stored when a version is written; covering indexes read in their
order (SQLite has no hash aggregation and would otherwise sort every row): (bucket_id,
category, size) for what is live per bucket and category, with one probe of
(current_id, deleted_at) per version deciding "live head", and (bucket_id, created_by,
size) for what every bucket and owner holds; index probes per deleted key for the
trash; the size index, walked from the top, for the largest objects.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, exists, func, select

from tfstorage.domain.categories import CATEGORIES, Category, in_bucket
from tfstorage.domain.usage import BucketReport, DailyUsage, LargeObject, Tally, UsageReport
from tfstorage.index.reads import bucket_id, upsert
from tfstorage.index.tables import (
    blobs,
    bucket_usage_daily,
    buckets,
    object_keys,
    usage_daily,
    versions,
)
from tfstorage.index.transactions import IndexStore

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

    live: dict[int, Tally] = {}
    categories = dict.fromkeys(CATEGORIES, Tally())
    # Scans ix_versions_bucket_id_category_size; each row is one probe of
    # ix_object_keys_current_id_deleted_at ("is it the head of a live key"). EXISTS, not a
    # join, so that SQLite keeps this plan whatever its statistics say.
    heads = (
        select(versions.c.bucket_id, versions.c.category, _count(), _bytes(versions.c.size))
        .where(_is_live_head())
        .group_by(versions.c.bucket_id, versions.c.category)
    )
    for row in conn.execute(scoped(heads, versions.c.bucket_id)):
        if row.bucket_id not in names:
            continue
        tally = Tally(int(row.n), int(row.size))
        live[row.bucket_id] = live.get(row.bucket_id, Tally()) + tally
        category = in_bucket(_category(row.category), names[row.bucket_id].name)
        categories[category] = categories[category] + tally

    held: dict[int, Tally] = {}
    owners: dict[str, Tally] = {}
    per_owner = select(
        versions.c.bucket_id, versions.c.created_by, _count(), _bytes(versions.c.size)
    ).group_by(versions.c.bucket_id, versions.c.created_by)
    for row in conn.execute(scoped(per_owner, versions.c.bucket_id)):
        tally = Tally(int(row.n), int(row.size))
        held[row.bucket_id] = held.get(row.bucket_id, Tally()) + tally
        owners[row.created_by] = owners.get(row.created_by, Tally()) + tally

    trash: dict[int, Tally] = {}
    trashed_keys: dict[int, int] = {}
    # Per deleted key, its versions by index probes (scalar subqueries): the trash is
    # usually small, and a join would tempt PostgreSQL into scanning every version.
    of_key = and_(
        versions.c.bucket_id == object_keys.c.bucket_id, versions.c.key == object_keys.c.key
    )
    deleted_keys = select(
        # "+ 0": grouping by the bare column would make SQLite walk the whole primary
        # key in its order instead of sorting the few deleted keys.
        (object_keys.c.bucket_id + 0).label("bid"),
        select(func.count()).where(of_key).scalar_subquery().label("n"),
        select(func.sum(versions.c.size)).where(of_key).scalar_subquery().label("size"),
    ).where(object_keys.c.deleted_at.is_not(None))
    deleted = scoped(deleted_keys, object_keys.c.bucket_id).subquery()
    in_trash = select(
        deleted.c.bid,
        func.count().label("keys"),
        func.coalesce(func.sum(deleted.c.n), 0).label("n"),
        func.coalesce(func.sum(deleted.c.size), 0).label("size"),
    ).group_by(deleted.c.bid)
    for row in conn.execute(in_trash):
        trash[row.bid] = Tally(int(row.n), int(row.size))
        trashed_keys[row.bid] = int(row.keys)

    # Blobs no version references any more only wait for garbage collection.
    blob_count, stored_bytes = conn.execute(
        select(func.count(), _bytes(blobs.c.size)).where(blobs.c.refcount > 0)
    ).one()
    logical = (
        sum(t.bytes for t in held.values())
        if only is None
        else conn.execute(select(_bytes(versions.c.size))).scalar_one()
    )
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
        stored=Tally(int(blob_count), int(stored_bytes)),
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
