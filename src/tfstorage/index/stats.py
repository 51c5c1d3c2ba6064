"""Usage figures, computed by aggregate queries."""

from __future__ import annotations

from sqlalchemy import Connection, and_, func, select

from tfstorage.domain.records import BucketUsage, IndexStats
from tfstorage.index.tables import blobs, buckets, object_keys, versions


def index_stats(conn: Connection) -> IndexStats:
    live = conn.execute(
        select(
            buckets.c.name, func.count(versions.c.id), func.coalesce(func.sum(versions.c.size), 0)
        )
        .select_from(
            buckets.outerjoin(
                object_keys,
                and_(object_keys.c.bucket_id == buckets.c.id, object_keys.c.deleted_at.is_(None)),
            ).outerjoin(versions, versions.c.id == object_keys.c.current_id)
        )
        .group_by(buckets.c.id, buckets.c.name)
    ).all()
    every = conn.execute(
        select(
            buckets.c.name, func.count(versions.c.id), func.coalesce(func.sum(versions.c.size), 0)
        )
        .select_from(buckets.outerjoin(versions, versions.c.bucket_id == buckets.c.id))
        .group_by(buckets.c.id, buckets.c.name)
    ).all()
    all_versions = {name: (int(count), int(size)) for name, count, size in every}
    usage = {
        name: BucketUsage(
            objects=int(count),
            bytes=int(size),
            versions=all_versions[name][0],
            version_bytes=all_versions[name][1],
        )
        for name, count, size in live
    }
    logical = conn.execute(select(func.coalesce(func.sum(versions.c.size), 0))).scalar_one()
    blob_count, stored = conn.execute(
        select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).select_from(blobs)
    ).one()
    return IndexStats(
        buckets=dict(sorted(usage.items())),
        logical_bytes=int(logical),
        stored_bytes=int(stored),
        blobs=int(blob_count),
    )
