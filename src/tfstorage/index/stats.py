"""Usage figures, computed by aggregate queries.

The same access paths as the analytics (index/analytics.py), so that `/health`,
`/api/v1/stats` and each `/metrics` scrape stay cheap with millions of objects: the
covering index (bucket_id, category, size) read in its order, with one probe of
(current_id, deleted_at) per version for "is it a live head".
"""

from __future__ import annotations

from sqlalchemy import Connection, exists, func, select

from tfstorage.domain.records import BucketUsage, IndexStats
from tfstorage.index.tables import blobs, buckets, object_keys, versions


def index_stats(conn: Connection) -> IndexStats:
    def per_bucket(*where: object) -> dict[int, tuple[int, int]]:
        stmt = (
            select(
                versions.c.bucket_id,
                func.count(),
                func.coalesce(func.sum(versions.c.size), 0),
            )
            .where(*where)  # type: ignore[arg-type]
            .group_by(versions.c.bucket_id)
        )
        return {bid: (int(n), int(size)) for bid, n, size in conn.execute(stmt)}

    live = per_bucket(
        exists().where(
            object_keys.c.current_id == versions.c.id, object_keys.c.deleted_at.is_(None)
        )
    )
    every = per_bucket()
    usage = {}
    for bid, name in conn.execute(select(buckets.c.id, buckets.c.name)):
        objects, size = live.get(bid, (0, 0))
        count, version_bytes = every.get(bid, (0, 0))
        usage[name] = BucketUsage(
            objects=objects, bytes=size, versions=count, version_bytes=version_bytes
        )
    blob_count, stored = conn.execute(
        select(func.count(), func.coalesce(func.sum(blobs.c.size), 0)).select_from(blobs)
    ).one()
    return IndexStats(
        buckets=dict(sorted(usage.items())),
        logical_bytes=sum(version_bytes for _, version_bytes in every.values()),
        stored_bytes=int(stored),
        blobs=int(blob_count),
    )
