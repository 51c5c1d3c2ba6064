from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Select, update

from tfstorage.domain.records import FileQuery, FileSearchPage
from tfstorage.errors import InvalidArgument, NoSuchBucket
from tfstorage.index import ObjectIndex
from tfstorage.index.search import search_statement
from tfstorage.index.tables import versions

from .builders import bulk_keys, new_version

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def catalog(index: ObjectIndex) -> ObjectIndex:
    index.create_bucket("models")
    index.create_bucket("datasets")
    files = [
        (
            "models",
            "vision/resnet.pt",
            100,
            "application/x-pytorch",
            {"team": "cv", "stage": "prod"},
        ),
        ("models", "vision/vit.pt", 300, "application/x-pytorch", {"team": "cv", "stage": "dev"}),
        ("models", "nlp/bert.pt", 200, "application/x-pytorch", {"team": "nlp", "stage": "prod"}),
        ("datasets", "vision/imagenet.tar", 5000, "application/x-tar", {"team": "cv"}),
        ("datasets", "old.csv", 10, "text/csv", {}),
    ]
    for day, (bucket, key, size, ctype, tags) in enumerate(files):
        v = index.commit_version(
            new_version(bucket, key, key.encode().ljust(size, b"."), content_type=ctype, tags=tags)
        ).version
        with index.engine.begin() as conn:  # a known creation time for the date filters
            conn.execute(
                update(versions)
                .where(versions.c.id == v.seq)
                .values(created_at=T0 + timedelta(days=day))
            )
    # Not latest, not live: never found.
    index.commit_version(new_version("models", "vision/resnet.pt", b"v2" * 60, tags={"team": "cv"}))
    index.commit_version(new_version("datasets", "gone.csv", b"x", content_type="text/csv"))
    index.delete_key("datasets", "gone.csv")
    return index


def keys(page: FileSearchPage) -> list[str]:
    return [f"{v.bucket}:{v.key}" for v in page.files]


def test_no_filters_lists_latest_live_by_seq(catalog: ObjectIndex) -> None:
    page = catalog.search_files(FileQuery())
    assert keys(page) == [
        "models:vision/vit.pt",
        "models:nlp/bert.pt",
        "datasets:vision/imagenet.tar",
        "datasets:old.csv",
        "models:vision/resnet.pt",
    ]
    assert [v.seq for v in page.files] == sorted(v.seq for v in page.files)
    assert all(v.visible for v in page.files)
    assert not page.truncated and page.next_marker == ""


def test_tags_are_anded(catalog: ObjectIndex) -> None:
    cv = catalog.search_files(FileQuery(tags=(("team", "cv"),)))
    assert keys(cv) == [
        "models:vision/vit.pt",
        "datasets:vision/imagenet.tar",
        "models:vision/resnet.pt",
    ]
    prod = catalog.search_files(FileQuery(tags=(("stage", "prod"),)))
    assert keys(prod) == ["models:nlp/bert.pt"]  # resnet's latest lost its stage tag
    both = catalog.search_files(FileQuery(tags=(("team", "cv"), ("stage", "dev"))))
    assert keys(both) == ["models:vision/vit.pt"]
    none = catalog.search_files(FileQuery(tags=(("team", "nlp"), ("stage", "dev"))))
    assert keys(none) == []


def test_bucket_prefix_type_and_size(catalog: ObjectIndex) -> None:
    assert keys(catalog.search_files(FileQuery(bucket="datasets"))) == [
        "datasets:vision/imagenet.tar",
        "datasets:old.csv",
    ]
    assert keys(catalog.search_files(FileQuery(prefix="vision/", bucket="models"))) == [
        "models:vision/vit.pt",
        "models:vision/resnet.pt",
    ]
    assert keys(catalog.search_files(FileQuery(content_type="text/csv"))) == ["datasets:old.csv"]
    assert keys(catalog.search_files(FileQuery(min_size=200, max_size=300))) == [
        "models:vision/vit.pt",
        "models:nlp/bert.pt",
    ]
    assert keys(catalog.search_files(FileQuery(max_size=10))) == ["datasets:old.csv"]
    with pytest.raises(NoSuchBucket):
        catalog.search_files(FileQuery(bucket="missing"))


def test_dates_are_half_open(catalog: ObjectIndex) -> None:
    window = FileQuery(created_after=T0 + timedelta(days=1), created_before=T0 + timedelta(days=3))
    assert keys(catalog.search_files(window)) == ["models:vision/vit.pt", "models:nlp/bert.pt"]
    # The same instant in another zone is the same filter.
    plus_five = T0.astimezone(timezone(timedelta(hours=5)))
    assert keys(catalog.search_files(FileQuery(created_before=plus_five + timedelta(days=2)))) == [
        "models:vision/vit.pt"
    ]


def test_paging_with_opaque_marker(catalog: ObjectIndex) -> None:
    everything = keys(catalog.search_files(FileQuery()))
    seen: list[str] = []
    marker: str | None = None
    while True:
        page = catalog.search_files(FileQuery(limit=2, marker=marker))
        assert len(page.files) <= 2
        seen += keys(page)
        if not page.truncated:
            break
        marker = page.next_marker
    assert seen == everything
    with pytest.raises(InvalidArgument):
        catalog.search_files(FileQuery(marker="12"))
    with pytest.raises(InvalidArgument):
        catalog.search_files(FileQuery(marker="s-1"))
    with pytest.raises(InvalidArgument):
        catalog.search_files(FileQuery(limit=0))
    assert len(catalog.search_files(FileQuery(limit=5000)).files) == 5


def test_tag_search_pages_in_order_across_buckets(catalog: ObjectIndex) -> None:
    for i in range(7):
        catalog.commit_version(
            new_version("models", f"many/{i}.pt", b"m%d" % i, tags={"team": "cv"})
        )
    seen: list[str] = []
    marker = None
    while True:
        page = catalog.search_files(FileQuery(tags=(("team", "cv"),), limit=3, marker=marker))
        seen += [f"{f.bucket}/{f.key}" for f in page.files]
        assert len(page.files) <= 3
        if not page.truncated:
            break
        marker = page.next_marker
    expected = {"models/vision/vit.pt", "datasets/vision/imagenet.tar", "models/vision/resnet.pt"}
    assert set(seen) == expected | {f"models/many/{i}.pt" for i in range(7)}
    assert len(seen) == len(set(seen)) == 10


def test_tag_search_is_driven_by_the_tag_index(catalog: ObjectIndex) -> None:
    """The plan reads the tag's hits from ix_tags_key_value_version_id, in page order,
    instead of walking every version (seconds at a million keys, bench/stats.py)."""
    from tfstorage.index.search import search_statement

    engine = catalog.engine
    with engine.connect() as conn:
        stmt = search_statement(conn, FileQuery(tags=(("team", "cv"), ("stage", "dev"))), 100)
        compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
            plan = "\n".join(str(r[-1]) for r in rows)
            assert "ix_tags_key_value_version_id" in plan, plan
            assert "SCAN versions" not in plan and "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
        else:  # tiny test tables: make PostgreSQL show the plan it takes on big ones
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))
            assert "ix_tags_key_value_version_id" in plan, plan
            assert "Seq Scan on versions" not in plan, plan


def _plan(conn: Connection, stmt: Select[Any]) -> str:
    compiled = stmt.compile(conn.engine, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
        return "\n".join(str(r[-1]) for r in rows)
    return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))


KEYS = 6000  # per bucket; key i has size i, every 500th is text/csv, every 50th trashed


@pytest.fixture
def sized(index: ObjectIndex) -> ObjectIndex:
    for name in ("b", "other"):
        index.create_bucket(name)
    for start in range(0, KEYS, 2000):  # PostgreSQL: a lock per key and transaction
        with index.engine.begin() as conn:
            for name, trash in (("b", 50), ("other", 0)):
                bulk_keys(conn, name, 2000, trash_every=trash, start=start)
    with index.engine.begin() as conn:
        conn.execute(
            update(versions).where(versions.c.size % 500 == 7).values(content_type="text/csv")
        )
    if index.engine.dialect.name == "postgresql":
        with index.engine.begin() as conn:  # statistics are rolled back with the transaction
            conn.exec_driver_sql("ANALYZE")
    return index


def _all_hits(index: ObjectIndex, q: FileQuery) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    marker = None
    while True:
        page = index.search_files(replace(q, limit=1000, marker=marker))
        found += [(v.bucket, v.size) for v in page.files]
        if not page.truncated:
            return found
        marker = page.next_marker


def _expected(bucket: str | None, keep: Callable[[int], bool]) -> set[tuple[str, int]]:
    hits = {("other", i) for i in range(KEYS) if keep(i)}
    hits |= {("b", i) for i in range(KEYS) if keep(i) and i % 50}
    return hits if bucket is None else {h for h in hits if h[0] == bucket}


# (query, the sizes it finds, whether few versions match)
CASES: list[tuple[FileQuery, Callable[[int], bool], bool]] = [
    (FileQuery(min_size=KEYS - 20), lambda i: i >= KEYS - 20, True),
    (FileQuery(max_size=9), lambda i: i <= 9, True),
    (FileQuery(bucket="b", min_size=100, max_size=130), lambda i: 100 <= i <= 130, True),
    (FileQuery(min_size=1), lambda i: i >= 1, False),
    (FileQuery(bucket="b", max_size=KEYS), lambda i: True, False),
    (FileQuery(content_type="text/csv"), lambda i: i % 500 == 7, True),
    (
        FileQuery(content_type="application/octet-stream", bucket="b"),
        lambda i: i % 500 != 7,
        False,
    ),
    (FileQuery(bucket="other"), lambda i: True, False),
]


def test_size_type_and_bucket_searches_use_indexes(sized: ObjectIndex) -> None:
    """A selective search reads its few hits from an index (ix_versions_size,
    ix_versions_content_type_id) and sorts only those; an unselective one walks an index
    in id order, the order it pages in, and stops at the page's end: never a scan of
    every version nor a sort of them all. PostgreSQL plans on ANALYZEd rows."""
    for query, keep, selective in CASES:
        expected = _expected(query.bucket, keep)
        hits = _all_hits(sized, query)
        assert len(hits) == len(set(hits)) and set(hits) == expected, query
        with sized.engine.connect() as conn:
            plan = _plan(conn, search_statement(conn, query, 100))
        if sized.engine.dialect.name == "sqlite":
            assert "TEMP B-TREE" not in plan, plan  # hits come in id order; no sort at all
            if query.content_type is not None:
                # Either walk is in id order; for a type in one bucket SQLite takes the bucket's.
                by_bucket = query.bucket is not None and "ix_versions_bucket_id_id" in plan
                assert by_bucket or "ix_versions_content_type_id" in plan, plan
            elif selective:  # the few hits, named by id after a probe of ix_versions_size
                assert "SEARCH versions USING INTEGER PRIMARY KEY" in plan, plan
            elif query.bucket is not None:
                assert "ix_versions_bucket_id_id" in plan, plan
            else:
                assert "SCAN versions" in plan, plan  # in id order, up to the page's end
        else:
            assert "Seq Scan on versions" not in plan, plan
            if selective:
                index = "ix_versions_content_type_id" if query.content_type else "ix_versions_size"
                assert index in plan, plan
            else:
                assert "Sort" not in plan, plan
