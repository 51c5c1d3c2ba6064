"""The usage report, daily snapshots and revision 0007's category backfill, on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import delete, select

from tfstorage.domain.usage import Tally
from tfstorage.index import ObjectIndex, create_index_engine
from tfstorage.index.analytics import AnalyticsIndex
from tfstorage.index.engine import migrate
from tfstorage.index.tables import bucket_usage_daily, usage_daily, versions

from .builders import new_version

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _world(index: ObjectIndex) -> None:
    index.create_bucket("models", quota_bytes=100)
    index.create_bucket("ckpt-runs")
    index.commit_version(new_version("models", "a.pt", b"a" * 10, created_by="alice"))
    index.commit_version(new_version("models", "a.pt", b"b" * 20, created_by="bob"))  # over
    index.commit_version(new_version("models", "data.csv", b"c" * 5, created_by="alice"))
    index.commit_version(new_version("ckpt-runs", "w.pt", b"a" * 10, created_by="bob"))  # dedup
    index.commit_version(new_version("ckpt-runs", "gone.bin", b"g" * 7, created_by="bob"))
    index.delete_key("ckpt-runs", "gone.bin")


def test_usage_report(index: ObjectIndex) -> None:
    _world(index)
    report = AnalyticsIndex(index.engine).usage_report(top=2)
    models, runs = report.buckets["models"], report.buckets["ckpt-runs"]
    assert (models.live, models.versions, models.noncurrent) == (
        Tally(2, 25),
        Tally(3, 35),
        Tally(1, 10),
    )
    assert (models.quota_bytes, models.trash, models.trashed_keys) == (100, Tally(), 0)
    assert (runs.live, runs.trash, runs.trashed_keys) == (Tally(1, 10), Tally(1, 7), 1)
    # w.pt is a checkpoint by its bucket's name; a.pt a model; data.csv a dataset.
    assert report.categories == {
        "datasets": Tally(1, 5),
        "models": Tally(1, 20),
        "checkpoints": Tally(1, 10),
        "other": Tally(),
    }
    assert report.owners == {"bob": Tally(3, 37), "alice": Tally(2, 15)}
    assert [(o.bucket, o.key, o.size) for o in report.largest] == [
        ("models", "a.pt", 20),
        ("ckpt-runs", "w.pt", 10),
    ]
    assert report.logical_bytes == 52 and report.stored == Tally(4, 42)
    assert report.dedup_saved_bytes == 10
    one = AnalyticsIndex(index.engine).usage_report(bucket="ckpt-runs")
    assert list(one.buckets) == ["ckpt-runs"] and one.categories["checkpoints"] == Tally(1, 10)
    assert one.owners == {"bob": Tally(2, 17)}


def test_content_type_change_recategorizes(index: ObjectIndex) -> None:
    index.create_bucket("data")
    version = index.commit_version(new_version("data", "table", b"x")).version
    analytics = AnalyticsIndex(index.engine)
    assert analytics.usage_report().categories["other"] == Tally(1, 1)
    index.update_version(version.file_id, content_type="text/csv")
    assert analytics.usage_report().categories["datasets"] == Tally(1, 1)


def test_snapshot_is_one_row_per_day(index: ObjectIndex) -> None:
    with index.engine.begin() as conn:  # the PostgreSQL database is shared by the suite
        conn.execute(delete(bucket_usage_daily))
        conn.execute(delete(usage_daily))
    _world(index)
    analytics = AnalyticsIndex(index.engine)
    today, yesterday = NOW.date(), NOW.date() - timedelta(days=1)
    analytics.record_snapshot(yesterday, analytics.usage_report(), NOW - timedelta(days=1))
    analytics.record_snapshot(today, analytics.usage_report(), NOW)
    index.commit_version(new_version("models", "more.bin", b"m" * 3))
    analytics.record_snapshot(today, analytics.usage_report(), NOW)  # again: replaces
    history = analytics.usage_history(yesterday)
    assert [d.day for d in history] == [yesterday, today]
    assert [d.objects for d in history] == [3, 4]
    assert history[1].buckets["models"].bytes == 28
    assert history[1].stored_bytes == 45 and history[1].trash_bytes == 7
    only = analytics.usage_history(today, bucket="models")
    assert [(d.day, d.objects, d.bytes) for d in only] == [(today, 3, 28)]
    assert analytics.usage_history(date(2100, 1, 1)) == []


def test_revision_0007_categorizes_existing_versions(empty_url: str) -> None:
    engine = create_index_engine(empty_url)
    try:
        migrate(engine, "0006")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO buckets (id, name, created_at, versioning, description) "
                "VALUES (1, 'm', CURRENT_TIMESTAMP, true, '')"
            )
            conn.exec_driver_sql(
                "INSERT INTO blobs (blob_id, sha256, md5, size, refcount, created_at) "
                "VALUES ('b1', 's1', 'm1', 1, 2, CURRENT_TIMESTAMP)"
            )
            for n, (key, ctype) in enumerate(
                (("w/model.onnx", "application/octet-stream"), ("t", "text/csv; charset=utf-8"))
            ):
                conn.exec_driver_sql(
                    "INSERT INTO versions (file_id, bucket_id, key, blob_id, size, etag, sha256,"
                    " content_type, user_metadata, created_at, created_by) VALUES "
                    f"('f{n}', 1, '{key}', 'b1', 1, 'm1', 's1', '{ctype}', '{{}}',"
                    " CURRENT_TIMESTAMP, 'me')"
                )
        migrate(engine)
        with engine.connect() as conn:
            found = dict(conn.execute(select(versions.c.key, versions.c.category)).all())
        assert found == {"w/model.onnx": "models", "t": "datasets"}
    finally:
        engine.dispose()


def test_bulk_commits_store_the_category(index: ObjectIndex) -> None:
    index.create_bucket("data")
    news = [
        new_version("data", "a.parquet", b"p"),
        new_version("data", "m.onnx", b"o"),
        new_version("data", "job/epoch_1.pt", b"c"),
    ]
    index.commit_versions_each(news)  # the batch path: one INSERT for all of them
    with index.engine.connect() as conn:
        found = dict(conn.execute(select(versions.c.key, versions.c.category)).all())
    assert found == {"a.parquet": "datasets", "m.onnx": "models", "job/epoch_1.pt": "checkpoints"}
