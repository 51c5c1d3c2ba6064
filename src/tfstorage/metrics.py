"""Prometheus collectors, one registry per app (nothing registered at import time).

The names are the original service's (`storage_uploads_total{bucket}`, ...). The JSON
counters of `/api/v1/storage/metrics` are read back from the same collectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.uploads = Counter("storage_uploads", "Objects uploaded", ["bucket"], registry=r)
        self.downloads = Counter("storage_downloads", "Objects downloaded", ["bucket"], registry=r)
        self.usage_bytes = Gauge(
            "storage_usage_bytes", "Bytes in live objects", ["bucket"], registry=r
        )
        self.operation_seconds = Histogram(
            "storage_operation_seconds", "Duration of storage operations", ["operation"],
            registry=r,
        )  # fmt: skip
        self.bytes_in = Counter("storage_bytes_received", "Object bytes received", registry=r)
        self.bytes_out = Counter("storage_bytes_sent", "Object bytes sent", registry=r)
        self.errors = Counter("storage_errors", "Error responses", ["code"], registry=r)
        self.gc_blobs_removed = Counter(
            "storage_gc_blobs_removed", "Blobs removed by garbage collection", registry=r
        )

    @contextmanager
    def time(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.operation_seconds.labels(operation=operation).observe(time.perf_counter() - start)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain JSON: {"storage_uploads_total": {"models": 3.0}, ...}."""
        out: dict[str, Any] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[label or "total"] = sample.value
        return out
