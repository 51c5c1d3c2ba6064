from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Connection, Executable, select

from tfstorage.domain.records import ListEntry, Listing
from tfstorage.errors import InvalidArgument, NoSuchBucket
from tfstorage.index import ObjectIndex
from tfstorage.index.listing import ENTRY_COLUMNS, ENTRY_SELECT, scan_statement, successor
from tfstorage.index.tables import buckets, versions

from .builders import bulk_keys, new_version


def _fill(index: ObjectIndex, keys: list[str], bucket: str = "b") -> None:
    index.create_bucket(bucket)
    for key in keys:
        index.commit_version(new_version(bucket, key, key.encode()))


def _names(listing: Listing) -> list[str]:
    return [v.key for v in listing.objects]


def test_byte_order(index: ObjectIndex) -> None:
    keys = ["é", "a", "B", "\U0001f600", "Z", "~", "a b", "ab", "a/", "\u00ff", "\u0100"]
    _fill(index, keys)
    expected = sorted(keys)  # code point order == UTF-8 byte order
    assert expected[:3] == ["B", "Z", "a"]
    assert _names(index.list_objects("b")) == expected


def test_prefix_is_literal(index: ObjectIndex) -> None:
    _fill(index, ["ab", "a%b", "a%", "a_c", "abc", "a\\b", "b%"])
    assert _names(index.list_objects("b", prefix="a%")) == ["a%", "a%b"]
    assert _names(index.list_objects("b", prefix="a_")) == ["a_c"]
    assert _names(index.list_objects("b", prefix="a\\")) == ["a\\b"]
    assert _names(index.list_objects("b", prefix="ab")) == ["ab", "abc"]
    assert _names(index.list_objects("b", prefix="zz")) == []


def test_unicode_prefix_edges(index: ObjectIndex) -> None:
    top = "\U0010ffff"
    _fill(index, ["é1", "é2", "ê", "x" + top, "x" + top + "y", "y", "\ud7ffa", "\ue000"])
    assert _names(index.list_objects("b", prefix="é")) == ["é1", "é2"]
    assert _names(index.list_objects("b", prefix="x" + top)) == ["x" + top, "x" + top + "y"]
    assert _names(index.list_objects("b", prefix="\ud7ff")) == ["\ud7ffa"]


def test_delimiter_groups(index: ObjectIndex) -> None:
    _fill(
        index,
        ["a.txt", "dir/x", "dir/y/z", "dir2/q", "docs/1", "docs/2", "top", "dir/", "d"],
    )
    listing = index.list_objects("b", delimiter="/")
    assert _names(listing) == ["a.txt", "d", "top"]
    assert listing.common_prefixes == ["dir/", "dir2/", "docs/"]
    assert not listing.truncated and listing.next_marker == ""

    nested = index.list_objects("b", prefix="dir/", delimiter="/")
    assert _names(nested) == ["dir/", "dir/x"]
    assert nested.common_prefixes == ["dir/y/"]


def test_group_counts_once_and_pages_by_prefix(index: ObjectIndex) -> None:
    _fill(index, [f"big/{i:03}" for i in range(40)] + ["a", "c"])
    page = index.list_objects("b", delimiter="/", limit=2)
    assert (_names(page), page.common_prefixes) == (["a"], ["big/"])
    assert page.truncated and page.next_marker == "big/"
    page = index.list_objects("b", delimiter="/", marker=page.next_marker, limit=2)
    assert (_names(page), page.common_prefixes, page.truncated) == (["c"], [], False)
    # A marker inside a group that was already returned skips the rest of it.
    page = index.list_objects("b", delimiter="/", marker="big/005")
    assert (_names(page), page.common_prefixes) == (["c"], [])


def test_marker_paging_without_delimiter(index: ObjectIndex) -> None:
    keys = sorted(f"k{i:02}" for i in range(7))
    _fill(index, keys)
    seen: list[str] = []
    marker = ""
    while True:
        page = index.list_objects("b", marker=marker, limit=3)
        seen += _names(page)
        if not page.truncated:
            assert page.next_marker == ""
            break
        assert page.next_marker == seen[-1]
        marker = page.next_marker
    assert seen == keys
    assert _names(index.list_objects("b", marker="k03")) == keys[4:]
    assert _names(index.list_objects("b", marker="a", prefix="k05")) == ["k05"]
    assert _names(index.list_objects("b", marker="zz")) == []


def test_listing_hides_deleted_keys_and_shows_latest(index: ObjectIndex) -> None:
    _fill(index, ["a", "b", "c"])
    newer = index.commit_version(new_version("b", "b", b"new")).version
    index.delete_key("b", "a")
    listing = index.list_objects("b")
    assert _names(listing) == ["b", "c"]
    assert listing.objects[0] == newer


def test_listing_arguments(index: ObjectIndex) -> None:
    _fill(index, [f"k{i:04}" for i in range(3)])
    with pytest.raises(NoSuchBucket):
        index.list_objects("missing")
    with pytest.raises(InvalidArgument):
        index.list_objects("b", limit=0)
    assert len(index.list_objects("b", limit=10**9).objects) == 3


def _oracle(keys: list[str], prefix: str, delimiter: str) -> list[tuple[str, bool]]:
    entries: set[tuple[str, bool]] = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        at = key.find(delimiter, len(prefix)) if delimiter else -1
        entries.add((key[: at + len(delimiter)], True) if at >= 0 else (key, False))
    return sorted(entries)


def test_listing_matches_a_model(index: ObjectIndex) -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", "B", "/", "%", "_", "é", "\U0001f600"]
    keys = sorted({"".join(rng.choices(alphabet, k=rng.randint(1, 5))) for _ in range(70)})
    _fill(index, keys)
    deleted = set(rng.sample(keys, 10))
    for key in deleted:
        index.delete_key("b", key)
    live = [k for k in keys if k not in deleted]

    for prefix in ["", "a", "a/", "a%", "é", "/"]:
        for delimiter in ["", "/", "%"]:
            expected = _oracle(live, prefix, delimiter)
            for limit in [2, 1000]:
                got: list[tuple[str, bool]] = []
                marker = ""
                while True:
                    page = index.list_objects(
                        "b", prefix=prefix, delimiter=delimiter, marker=marker, limit=limit
                    )
                    lean = index.list_entries(
                        "b", prefix=prefix, delimiter=delimiter, marker=marker, limit=limit
                    )
                    assert [e.key for e in lean.objects] == [v.key for v in page.objects]
                    assert lean.common_prefixes == page.common_prefixes
                    assert (lean.truncated, lean.next_marker) == (page.truncated, page.next_marker)
                    entries = [(v.key, False) for v in page.objects]
                    entries += [(p, True) for p in page.common_prefixes]
                    assert len(entries) <= limit
                    got += sorted(entries)
                    if not page.truncated:
                        break
                    marker = page.next_marker
                    assert marker == max(name for name, _ in entries)
                assert got == expected, (prefix, delimiter, limit)


@given(st.text(max_size=4), st.text(min_size=1, max_size=3))
def test_successor_bounds_exactly_the_prefixed_strings(text: str, prefix: str) -> None:
    upper = successor(prefix)
    inside = text >= prefix and (upper is None or text < upper)
    assert inside == text.startswith(prefix)
    candidate = prefix + text
    assert candidate >= prefix and (upper is None or candidate < upper)


def test_successor_edges() -> None:
    assert successor("") is None
    assert successor("a") == "b"
    assert successor("a\ud7ff") == "a\ue000"
    assert successor("a\U0010ffff") == "b"
    assert successor("\U0010ffff") is None


def test_entries_carry_the_heads_columns(index: ObjectIndex) -> None:
    index.create_bucket("b")
    index.commit_version(new_version("b", "k", b"old", created_by="ana"))
    head = index.commit_version(
        new_version("b", "k", b"new", content_type="text/csv", created_by="bo")
    ).version
    other = index.commit_version(new_version("b", "m", b"m" * 10, metadata={"x": 1})).version
    index.commit_version(new_version("b", "trashed", b"t"))
    index.delete_key("b", "trashed")
    page = index.list_entries("b")
    assert page.objects == [
        ListEntry(
            key=v.key,
            file_id=v.file_id,
            size=v.size,
            etag=v.etag,
            parts_etag=v.parts_etag,
            sha256=v.sha256,
            content_type=v.content_type,
            created_at=v.created_at,
            created_by=v.created_by,
        )
        for v in (head, other)
    ]
    assert page.objects[0].created_at.tzinfo is not None
    with pytest.raises(NoSuchBucket):
        index.list_entries("missing")


def _plan(conn: Connection, stmt: Executable) -> str:
    """The plan the database takes for `stmt`, as text."""
    compiled = stmt.compile(conn.engine, compile_kwargs={"literal_binds": True})
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
        return "\n".join(str(r[-1]) for r in rows)
    return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}"))


def test_a_page_reads_the_live_key_index_in_order(index: ObjectIndex) -> None:
    """Each scan of a page walks ix_object_keys_live from its lower bound in key order
    (no sort, no read of the table's rows or trashed keys), and the page's columns come
    by primary key. PostgreSQL plans on real statistics: enough rows (two buckets, half
    the keys trashed) and ANALYZE, so that the plan is the one it takes at scale."""
    for name in ("b", "other"):
        index.create_bucket(name)
    with index.engine.begin() as conn:
        bulk_keys(conn, "b", 3000, trash_every=2)
        bulk_keys(conn, "other", 3000, trash_every=0)
    if index.engine.dialect.name == "postgresql":
        with index.engine.begin() as conn:  # statistics are rolled back with the transaction
            conn.exec_driver_sql("ANALYZE")
    with index.engine.connect() as conn:
        bid = conn.execute(select(buckets.c.id).where(buckets.c.name == "b")).scalar_one()
        for prefix, lower, inclusive in [("", "", True), ("k0", "k01", False)]:
            plan = _plan(conn, scan_statement(bid, prefix, lower, inclusive=inclusive, limit=1001))
            if conn.dialect.name == "sqlite":
                assert "USING COVERING INDEX ix_object_keys_live" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
            else:
                assert "Index Only Scan using ix_object_keys_live" in plan, plan
                assert "Sort" not in plan and "Seq Scan" not in plan, plan
        if conn.dialect.name == "sqlite":
            # A listing page reads its heads' columns in the same statement, each head
            # by primary key, still in the index's order.
            for prefix, lower, inclusive in [("", "", True), ("k0", "k01", False)]:
                entries = scan_statement(
                    bid, prefix, lower, inclusive=inclusive, limit=1001, columns=ENTRY_COLUMNS
                )
                plan = _plan(conn, entries)
                assert "USING COVERING INDEX ix_object_keys_live" in plan, plan
                assert "SEARCH versions USING INTEGER PRIMARY KEY" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
        else:
            # PostgreSQL asks for the heads 500 ids at a time (reads.BATCH).
            ids = conn.execute(select(versions.c.id).order_by(versions.c.id).limit(500))
            plan = _plan(conn, ENTRY_SELECT.where(versions.c.id.in_(list(ids.scalars()))))
            assert "pk_versions" in plan and "Seq Scan on versions" not in plan, plan
        page = index.list_entries("b", limit=1000)
        assert len(page.objects) == 1000 and page.truncated
        assert all(int(e.key[1:]) % 2 for e in page.objects)  # the trashed keys skipped
