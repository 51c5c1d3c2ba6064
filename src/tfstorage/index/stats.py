"""Usage figures from the usage counters (index/usage.py): a few rows per bucket, so
`/health`, `/api/v1/stats` and each `/metrics` scrape cost the same at any size."""

from __future__ import annotations

from sqlalchemy import Connection, select

from tfstorage.domain.records import BucketUsage, IndexStats
from tfstorage.index.tables import buckets
from tfstorage.index.usage import Figures, per_bucket, read_blobs, read_counters


def index_stats(conn: Connection) -> IndexStats:
    counted = per_bucket(read_counters(conn))
    usage = {}
    for bid, name in conn.execute(select(buckets.c.id, buckets.c.name)):
        figures = counted.get(bid, Figures())
        usage[name] = BucketUsage(
            objects=figures.objects,
            bytes=figures.bytes,
            versions=figures.versions,
            version_bytes=figures.version_bytes,
        )
    stored = read_blobs(conn)
    return IndexStats(
        buckets=dict(sorted(usage.items())),
        logical_bytes=sum(figures.version_bytes for figures in counted.values()),
        stored_bytes=stored.bytes,
        blobs=stored.blobs,
    )
