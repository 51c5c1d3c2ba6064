"""Prometheus collectors, one registry per app (nothing registered at import time).

The names are the original service's (`storage_uploads_total{bucket}`, ...). The JSON
counters of `/api/v1/storage/metrics` are read back from the same collectors.

Several worker processes (WORKERS > 1): prometheus_client's multiprocess mode. `tfstorage
serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start
(`prepare_multiprocess_dir`); each worker's values go to files there, and a scrape on
any worker sums the counters and histograms of all of them. Gauges say how they
combine (`multiprocess_mode`); ours are set at scrape time from the index and the
backends, so the most recent value wins.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Request latency buckets: up to minutes, for large uploads and downloads.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def multiprocess_enabled() -> bool:
    """prometheus_client decides once, at import, from the environment variable."""
    return values.ValueClass is not values.MutexValue


def prepare_multiprocess_dir() -> tuple[Path, bool]:
    """In the process that starts the workers, before it starts them: the directory
    for their metric files, emptied (stale files from an earlier run would be summed
    in). Returns it and whether it was made here (then the caller removes it at exit)."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path, False
    path = Path(tempfile.mkdtemp(prefix="tfstorage-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by the workers
    return path, True


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.uploads = Counter("storage_uploads", "Objects uploaded", ["bucket"], registry=r)
        self.downloads = Counter("storage_downloads", "Objects downloaded", ["bucket"], registry=r)
        self.usage_bytes = Gauge(
            "storage_usage_bytes", "Bytes in live objects", ["bucket"], registry=r,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
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
        # --- observability (issue 6) ------------------------------------------------------
        # By route template (never the raw path: bounded cardinality), method and status
        # class ("2xx"; "none" when no answer was sent).
        self.http_seconds = Histogram(
            "storage_http_request_duration_seconds", "HTTP requests, first byte in to last out",
            ["route", "method", "status"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self.http_bytes_in = Counter(
            "storage_http_request_bytes", "HTTP request body bytes", ["route"], registry=r
        )
        self.http_bytes_out = Counter(
            "storage_http_response_bytes", "HTTP response body bytes", ["route"], registry=r
        )
        self._http_latency: dict[tuple[str, str, str], Any] = {}
        self._http_received: dict[str, Any] = {}
        self._http_sent: dict[str, Any] = {}
        # 1 up, 0 down; set at each scrape. backend = blob_store | replica | index.
        self.backend_up = Gauge(
            "storage_backend_up", "Whether a backend answers", ["backend"], registry=r,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.objects = Gauge(
            "storage_objects", "Live objects", ["bucket"], registry=r,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        # --- lifecycle (issue 6): action = expire | delete_version, outcome = done | skipped
        self.lifecycle_actions = Counter(
            "storage_lifecycle_actions", "Lifecycle expiries", ["action", "outcome"], registry=r
        )
        # --- integrity: verify and scrub (issue 6) ---------------------------------------
        self.integrity_blobs_verified = Counter(
            "storage_integrity_blobs_verified", "Blobs verified (verify and scrub)", registry=r
        )
        self.integrity_bytes = Counter(
            "storage_integrity_bytes_read", "Bytes re-read to verify blobs", registry=r
        )
        self.integrity_damage_found = Counter(
            "storage_integrity_damage_found", "Damaged blobs found", ["damage"], registry=r
        )
        self.integrity_repaired = Counter(
            "storage_integrity_repaired", "Blob copies repaired from the other copy", registry=r
        )
        self.integrity_damaged_blobs = Gauge(
            "storage_integrity_damaged_blobs", "Blobs marked damaged in the index", ["damage"],
            registry=r, multiprocess_mode="mostrecent",  # set from the index at each scrape
        )  # fmt: skip
        self.scrub_passes = Counter("storage_scrub_passes", "Scrub passes finished", registry=r)
        # --- end of integrity -------------------------------------------------------------

    def observe_request(
        self, route: str, method: str, status: str, seconds: float, bytes_in: int, bytes_out: int
    ) -> None:
        """One HTTP request: its latency and body bytes. The labelled children are kept
        (routes are templates, statuses classes: a few dozen): looking one up, with its
        lock and label tuple, cost more than the observation. A byte series appears with
        the first bytes counted, as before."""
        key = (route, method, status)
        latency = self._http_latency.get(key)
        if latency is None:
            latency = self._http_latency[key] = self.http_seconds.labels(
                route=route, method=method, status=status
            )
        latency.observe(seconds)
        if bytes_in:
            received = self._http_received.get(route)
            if received is None:
                received = self._http_received[route] = self.http_bytes_in.labels(route=route)
            received.inc(bytes_in)
        if bytes_out:
            sent = self._http_sent.get(route)
            if sent is None:
                sent = self._http_sent[route] = self.http_bytes_out.labels(route=route)
            sent.inc(bytes_out)

    @contextmanager
    def time(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.operation_seconds.labels(operation=operation).observe(time.perf_counter() - start)

    def _collecting_registry(self) -> CollectorRegistry:
        """This process's collectors, or with several workers every worker's files."""
        if not multiprocess_enabled():
            return self.registry
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged

    def exposition(self) -> bytes:
        return generate_latest(self._collecting_registry())

    def snapshot(self) -> dict[str, Any]:
        """The counters as plain JSON: {"storage_uploads_total": {"models": 3.0}, ...}."""
        out: dict[str, Any] = {}
        for family in self._collecting_registry().collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out.setdefault(sample.name, {})[label or "total"] = sample.value
        return out
