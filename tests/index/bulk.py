"""A large index generated in place by INSERT ... SELECT (no Python loop over rows),
and the figures it must report, computed independently in Python from the same recipe.

Key i (1..keys) lives in bucket BUCKETS[i % 5] as `{dir}/obj{i}{ext}`; its first
version (seq i) uses blob ((i-1) % blob_period) + 1, so blobs are shared (dedup); every
10th key has a second, newer version (its head, on a blob of its own); every 50th key
is deleted (in the trash).
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Index, text
from sqlalchemy.schema import CreateIndex, DropIndex

from tfstorage.domain.categories import categorize
from tfstorage.index import ObjectIndex, tables
from tfstorage.index.usage import UsageIndex
from tfstorage.index.usage_triggers import drop_statements, trigger_statements

BUCKETS = ("scale-a", "scale-b", "scale-c", "scale-d", "ckpt-scale")
EXTENSIONS = (".ckpt", ".safetensors", ".parquet", ".csv", ".txt", "")
NONCURRENT_EVERY = 10
TRASH_EVERY = 50
CREATED = "2026-01-01 00:00:00.000000"


def blob_size(j: int) -> int:
    return (j * 37) % 10_000 + 1


def extra_blob_size(j: int) -> int:
    return (j * 53) % 50_000 + 1


def key_dir(i: int) -> str:
    return f"ckpt/job{i % 100}" if i % 4 == 0 else f"run{i % 100}"


def content_type(i: int) -> str:
    if i % 6 == 3:
        return "text/csv"
    if i % 12 == 5:
        return "text/csv; charset=utf-8"
    return "application/octet-stream"


@dataclass
class Expected:
    live: Counter[str] = field(default_factory=Counter)  # bucket -> objects
    live_bytes: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    version_bytes: Counter[str] = field(default_factory=Counter)
    trash: Counter[str] = field(default_factory=Counter)  # bucket -> versions in the trash
    trash_bytes: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    category_bytes: Counter[str] = field(default_factory=Counter)
    owners: Counter[str] = field(default_factory=Counter)
    owner_bytes: Counter[str] = field(default_factory=Counter)
    blobs: int = 0
    stored_bytes: int = 0
    largest: list[tuple[int, str]] = field(default_factory=list)  # (size, key), top 10


@dataclass(frozen=True)
class Recipe:
    keys: int = 1_000_000
    blob_period: int = 200_000

    @property
    def extras(self) -> int:
        return self.keys // NONCURRENT_EVERY

    def expected(self) -> Expected:
        """The figures, by walking the recipe in Python (not through the index)."""
        e = Expected()
        # A key's category depends on its bucket, directory, extension and content type
        # (the digits of "obj{i}" carry no hint): one categorize() call per combination.
        category_cache: dict[tuple[str, str, str, str], str] = {}
        heads: list[tuple[int, int, str]] = []  # (size, seq, key) of live objects
        for i in range(1, self.keys + 1):
            bucket = BUCKETS[i % 5]
            first = blob_size((i - 1) % self.blob_period + 1)
            owner = f"user{i % 7}"
            e.versions[bucket] += 1
            e.version_bytes[bucket] += first
            e.owners[owner] += 1
            e.owner_bytes[owner] += first
            head, seq = first, i
            if i % NONCURRENT_EVERY == 0:
                head, seq = extra_blob_size(i // NONCURRENT_EVERY), self.keys + i // 10
                e.versions[bucket] += 1
                e.version_bytes[bucket] += head
                e.owners["trainer"] += 1
                e.owner_bytes["trainer"] += head
            if i % TRASH_EVERY == 0:
                held = 2 if i % NONCURRENT_EVERY == 0 else 1
                e.trash[bucket] += held
                e.trash_bytes[bucket] += head + (first if held == 2 else 0)
                continue
            e.live[bucket] += 1
            e.live_bytes[bucket] += head
            directory, ext, ctype = key_dir(i), EXTENSIONS[i % 6], content_type(i)
            key = f"{directory}/obj{i}{ext}"
            combo = (bucket, directory, ext, ctype)
            category = category_cache.get(combo)
            if category is None:
                category = category_cache[combo] = categorize(bucket, key, ctype)
            e.categories[category] += 1
            e.category_bytes[category] += head
            if head > 9_000:  # the largest are among these (checked below)
                heads.append((head, seq, key))
        e.blobs = self.blob_period + self.extras
        e.stored_bytes = sum(blob_size(j) for j in range(1, self.blob_period + 1)) + sum(
            extra_blob_size(j) for j in range(1, self.extras + 1)
        )
        e.largest = [(size, key) for size, _seq, key in heapq.nlargest(10, heads)]
        assert len(e.largest) == 10
        return e

    def fill(self, index: ObjectIndex) -> float:
        """Generate the rows into an empty (migrated) index; returns the seconds taken."""
        start = time.perf_counter()
        for name in BUCKETS:
            index.create_bucket(name)
        engine = index.engine
        with engine.begin() as conn:
            ids = dict(conn.execute(text("SELECT name, id FROM buckets")).all())
        first_id = ids[BUCKETS[0]]
        assert [ids[name] for name in BUCKETS] == list(range(first_id, first_id + 5))
        statements = _postgres(self) if engine.dialect.name == "postgresql" else _sqlite(self)
        params = {
            "keys": self.keys,
            "period": self.blob_period,
            "extras": self.extras,
            "first_bucket": first_id,
            "created": CREATED,
        }
        loaded = (tables.blobs, tables.versions, tables.object_keys)
        # Indexes built once after the load (a sort) instead of row by row.
        secondary = [ix for table in loaded for ix in table.indexes]
        if engine.dialect.name == "sqlite":
            _load_sqlite(engine, secondary, statements, params)
            UsageIndex(engine).repair()  # the counters, from one scan (as revision 0011)
            return time.perf_counter() - start
        with engine.begin() as conn:
            # Test data only: no per-row foreign-key triggers (the recipe keeps them
            # true), and memory to build each index in one sort.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            for ix in secondary:
                ix.drop(conn)
            for statement in statements:
                conn.execute(text(statement), params)
            for ix in secondary:
                ix.create(conn)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE blobs, versions, object_keys"))
        # The replica role above also kept the usage triggers quiet: one rebuild instead.
        UsageIndex(engine).repair()
        return time.perf_counter() - start


def _load_sqlite(
    engine: Engine, secondary: list[Index], statements: list[str], params: dict[str, Any]
) -> None:
    """One transaction on a private connection without a journal (test data: a crash
    mid-load loses only the test database), then back to WAL for the service. No
    ANALYZE, as in a deployment, where nothing runs it."""
    engine.dispose()  # leaving the journal mode needs the only connection
    path = engine.url.database
    assert path
    raw = sqlite3.connect(path, isolation_level=None)
    try:
        raw.execute("PRAGMA journal_mode = OFF")
        raw.execute("PRAGMA synchronous = OFF")
        raw.execute("PRAGMA cache_size = -262144")  # 256 MiB
        raw.execute("BEGIN")
        for ix in secondary:
            raw.execute(str(DropIndex(ix).compile(dialect=engine.dialect)))
        # No per-row counter triggers either: fill() rebuilds the counters after.
        for statement in drop_statements("sqlite"):
            raw.execute(statement)
        for statement in statements:
            raw.execute(statement, params)
        for ix in secondary:
            raw.execute(str(CreateIndex(ix).compile(dialect=engine.dialect)))
        for statement in trigger_statements("sqlite"):
            raw.execute(statement)
        raw.execute("COMMIT")
        raw.execute("PRAGMA journal_mode = WAL")
    finally:
        raw.close()


def _sql_expressions(fmt32: str, fmt64: str, concat: str) -> dict[str, str]:
    ext = " ".join(f"WHEN {n} THEN '{e}'" for n, e in enumerate(EXTENSIONS))
    return {
        "bucket": "(:first_bucket + i % 5)",
        "key": (
            f"(CASE WHEN i % 4 = 0 THEN 'ckpt/job' ELSE 'run' END {concat} (i % 100) {concat}"
            f" '/obj' {concat} i {concat} (CASE i % 6 {ext} END))"
        ),
        "ctype": (
            "(CASE WHEN i % 6 = 3 THEN 'text/csv' WHEN i % 12 = 5 "
            "THEN 'text/csv; charset=utf-8' ELSE 'application/octet-stream' END)"
        ),
        # What the write path stores (key_category) for these keys; the test checks a
        # sample of rows against key_category itself.
        "category": (
            "(CASE i % 6 WHEN 0 THEN 'checkpoints' "
            "WHEN 1 THEN (CASE WHEN i % 4 = 0 THEN 'checkpoints' ELSE 'models' END) "
            "WHEN 2 THEN 'datasets' WHEN 3 THEN 'datasets' WHEN 4 THEN 'other' "
            "ELSE (CASE WHEN i % 12 = 5 THEN 'datasets' ELSE 'other' END) END)"
        ),
        "fmt32": fmt32,
        "fmt64": fmt64,
    }


def _statements(x: dict[str, str], series: str, ts: str, json: str) -> list[str]:
    blob_of_first = "((i - 1) % :period + 1)"
    f32, f64 = x["fmt32"], x["fmt64"]
    return [
        # Blobs 1..period: blob j is referenced by the first versions of j, j+period, ...
        f"INSERT INTO blobs (blob_id, sha256, md5, size, refcount, created_at) "
        f"SELECT {f32.format('i')}, {f64.format('i')}, {f32.format('i')}, (i * 37) % 10000 + 1, "
        f"(:keys - i) / :period + 1, {ts} FROM {series.format(n=':period')}",
        # Blobs of the second versions: period+1 .. period+extras.
        f"INSERT INTO blobs (blob_id, sha256, md5, size, refcount, created_at) "
        f"SELECT {f32.format('(:period + i)')}, {f64.format('(:period + i)')}, "
        f"{f32.format('(:period + i)')}, (i * 53) % 50000 + 1, 1, {ts} "
        f"FROM {series.format(n=':extras')}",
        f"INSERT INTO versions (id, file_id, bucket_id, key, blob_id, size, etag, sha256, "
        f"content_type, category, user_metadata, created_at, created_by) "
        f"SELECT i, {f32.format('i')}, {x['bucket']}, {x['key']}, {f32.format(blob_of_first)}, "
        f"({blob_of_first} * 37) % 10000 + 1, {f32.format(blob_of_first)}, "
        f"{f64.format(blob_of_first)}, {x['ctype']}, {x['category']}, {json}, {ts}, "
        f"'user' || (i % 7) "
        f"FROM {series.format(n=':keys')}",
        # Second versions of every 10th key (k = 10 j): seq keys + j.
        f"INSERT INTO versions (id, file_id, bucket_id, key, blob_id, size, etag, sha256, "
        f"content_type, category, user_metadata, created_at, created_by) "
        f"SELECT :keys + i / 10, {f32.format(':keys + i / 10')}, {x['bucket']}, {x['key']}, "
        f"{f32.format('(:period + i / 10)')}, ((i / 10) * 53) % 50000 + 1, "
        f"{f32.format('(:period + i / 10)')}, {f64.format('(:period + i / 10)')}, "
        f"{x['ctype']}, {x['category']}, {json}, {ts}, 'trainer' "
        f"FROM (SELECT i * 10 AS i FROM {series.format(n=':extras')}) s",
        f"INSERT INTO object_keys (bucket_id, key, current_id, deleted_at) "
        f"SELECT {x['bucket']}, {x['key']}, "
        f"CASE WHEN i % 10 = 0 THEN :keys + i / 10 ELSE i END, "
        f"CASE WHEN i % 50 = 0 THEN {ts} END FROM {series.format(n=':keys')} "
        # In primary-key order: appending to its B-tree instead of a million random inserts.
        "ORDER BY 1, 2",
    ]


def _sqlite(recipe: Recipe) -> list[str]:
    x = _sql_expressions("printf('%032x', {})", "printf('%064x', {})", "||")
    series = (
        "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "
        "SELECT i FROM n)"
    )
    return _statements(x, series, ":created", "'{}'")


def _postgres(recipe: Recipe) -> list[str]:
    x = _sql_expressions("lpad(to_hex({}), 32, '0')", "lpad(to_hex({}), 64, '0')", "||")
    series = "generate_series(1, {n}) AS g(i)"
    statements = _statements(x, series, "CAST(:created AS timestamptz)", "'{}'::jsonb")
    # The sequence behind versions.id must move past the rows inserted with explicit ids.
    statements.append("SELECT setval(pg_get_serial_sequence('versions', 'id'), :keys + :extras)")
    return statements
