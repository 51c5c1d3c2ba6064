"""ListObjectVersions' index query, on SQLite and PostgreSQL: every page boundary
(inside a key, on a delete marker, on a common prefix) resumes exactly where it stopped."""

from __future__ import annotations

from tfstorage.domain.version_listing import VersionListing
from tfstorage.index import ObjectIndex

from .builders import new_version

Row = tuple[str, str, bool]  # key, version id, is latest


def _rows(listing: VersionListing) -> list[Row]:
    return [(e.key, e.version_id, e.is_latest) for e in listing.entries]


def _all_pages(index: ObjectIndex, limit: int, **kwargs: str) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    prefixes: list[str] = []
    key_marker = version_marker = ""
    while True:
        page = index.list_object_versions(
            "b", key_marker=key_marker, version_marker=version_marker, limit=limit, **kwargs
        )
        rows += _rows(page)
        prefixes += page.common_prefixes
        if not page.truncated:
            return rows, prefixes
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker


def test_every_page_size_lists_the_same(index: ObjectIndex) -> None:
    index.create_bucket("b")
    ids: dict[str, list[str]] = {}
    for key in ("a", "b", "c", "d/1", "d/2"):
        for n in range(3):
            commit = index.commit_version(new_version("b", key, f"{key}{n}".encode()))
            ids.setdefault(key, []).append(commit.version.file_id)
    head = index.delete_key("b", "b")  # trashed: a delete marker on top of its versions
    whole, _ = _all_pages(index, 1000)
    marker = ("b", "deleted." + head.file_id, True)
    assert marker in whole
    assert whole.index(marker) == 3  # after a's versions, before b's
    for key, found in ids.items():
        latest = key != "b"
        listed = [row for row in whole if row[0] == key and row != marker]
        assert listed == [(key, vid, latest and vid == found[-1]) for vid in reversed(found)]
    for limit in (1, 2, 3, 4, 7):
        assert _all_pages(index, limit) == (whole, [])
        grouped = _all_pages(index, limit, delimiter="/")
        assert grouped == ([row for row in whole if not row[0].startswith("d/")], ["d/"])


def test_prefix_and_a_vanished_version_marker(index: ObjectIndex) -> None:
    index.create_bucket("b")
    first = index.commit_version(new_version("b", "p/x", b"1")).version
    index.commit_version(new_version("b", "p/x", b"2"))
    index.commit_version(new_version("b", "p/y", b"3"))
    index.commit_version(new_version("b", "q", b"4"))
    assert [r[0] for r in _all_pages(index, 1, prefix="p/")[0]] == ["p/x", "p/x", "p/y"]
    index.delete_version(first.file_id)
    # A marker deleted since its page: the listing resumes after its key.
    page = index.list_object_versions("b", key_marker="p/x", version_marker=first.file_id)
    assert [r[0] for r in _rows(page)] == ["p/y", "q"]
