"""Use-cases: upload, download, versions, delete, buckets, garbage collection, stats."""
