"""S3's "null" version in the index: versions written while a bucket's versioning is off.

The next unversioned write of a key replaces its null version and only it; versions
written while versioning was on stay. On SQLite and PostgreSQL (the `index` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from tfstorage.errors import NoSuchKey, NoSuchVersion
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.tables import buckets
from tfstorage.index.usage import UsageIndex

from .builders import new_version, refcounts


def bodies(index: ObjectIndex, bucket: str, key: str) -> list[tuple[int, bool]]:
    """(size, unversioned) of the key's versions, newest first."""
    return [(v.size, v.unversioned) for v in index.list_versions(bucket, key)]


def test_versioning_set_records_whether_versioning_was_ever_configured(
    index: ObjectIndex,
) -> None:
    assert index.create_bucket("rest").versioning_set  # REST buckets: as they were
    fresh = index.create_bucket("s3", versioning=False, versioning_set=False)
    assert not fresh.versioning_set and not fresh.versioning
    assert index.update_bucket("s3", versioning=False).versioning_set  # Suspended now
    assert index.update_bucket("s3", versioning=True).versioning_set


def test_unversioned_write_replaces_only_the_null_version(index: ObjectIndex) -> None:
    index.create_bucket("b", versioning=False, versioning_set=False)
    first = index.commit_version(new_version("b", "k", b"1")).version
    assert first.unversioned
    index.commit_version(new_version("b", "k", b"22"))  # replaces the null version
    assert bodies(index, "b", "k") == [(2, True)]
    index.update_bucket("b", versioning=True)
    index.commit_version(new_version("b", "k", b"333"))
    index.commit_version(new_version("b", "k", b"4444"))
    assert bodies(index, "b", "k") == [(4, False), (3, False), (2, True)]
    index.update_bucket("b", versioning=False)  # Suspended
    index.commit_version(new_version("b", "k", b"55555"))
    # The old null version went; the ones written while Enabled stayed.
    assert bodies(index, "b", "k") == [(5, True), (4, False), (3, False)]
    assert index.null_version("b", "k").size == 5
    assert index.resolve_latest("b", "k").size == 5
    index.claim_unreferenced_blobs()  # the replaced bodies' blobs are collected
    assert sorted(refcounts(index).values()) == [1, 1, 1]
    assert UsageIndex(index.engine).check().ok
    stats = index.stats().buckets["b"]
    assert (stats.objects, stats.bytes, stats.versions, stats.version_bytes) == (1, 5, 3, 12)


def test_versioned_writes_carry_no_null_flag(index: ObjectIndex) -> None:
    index.create_bucket("v")
    index.commit_version(new_version("v", "k", b"1"))
    with pytest.raises(NoSuchVersion):
        index.null_version("v", "k")


def test_delete_null_and_hide(index: ObjectIndex) -> None:
    index.create_bucket("b")
    index.commit_version(new_version("b", "k", b"1"))
    index.update_bucket("b", versioning=False)
    index.commit_version(new_version("b", "k", b"22"))
    hidden = index.delete_null_and_hide("b", "k")
    # The null version is gone for good; the key is in the trash over the Enabled one.
    assert (hidden.size, hidden.deleted_at is not None) == (1, True)
    assert bodies(index, "b", "k") == [(1, False)]
    with pytest.raises(NoSuchKey):
        index.resolve_latest("b", "k")
    assert index.delete_null_and_hide("b", "k").size == 1  # again: nothing more to remove
    assert bodies(index, "b", "k") == [(1, False)]
    # Only a null version: it goes, and so does the key.
    index.commit_version(new_version("b", "only", b"333"))
    assert index.delete_null_and_hide("b", "only").size == 3
    with pytest.raises(NoSuchKey):
        index.list_versions("b", "only")
    with pytest.raises(NoSuchKey):
        index.delete_null_and_hide("b", "only")
    assert UsageIndex(index.engine).check().ok


def test_revision_0018_marks_versions_of_unversioned_buckets_null(empty_url: str) -> None:
    engine = create_index_engine(empty_url)
    try:
        migrate(engine, "0016")
        for name, versioning in (("on", True), ("off", False)):
            _version_before_0018(engine, name, versioning)
        migrate(engine)
        index = ObjectIndex(engine)
        assert bodies(index, "on", "k") == [(1, False)]
        assert bodies(index, "off", "k") == [(1, True)]
        assert index.get_bucket("off").versioning_set  # answers "Suspended", as before
        index.commit_version(new_version("off", "k", b"22"))  # replaces it, as before
        assert bodies(index, "off", "k") == [(2, True)]
        assert UsageIndex(engine).check().ok
    finally:
        engine.dispose()


def _version_before_0018(engine: Engine, bucket: str, versioning: bool) -> None:
    """A bucket holding one version of "k", as revision 0016 stored them."""
    with engine.begin() as conn:
        bid = conn.execute(
            buckets.insert()
            .values(
                name=bucket, created_at=datetime.now(UTC), versioning=versioning, description=""
            )
            .returning(buckets.c.id)
        ).scalar_one()
        conn.exec_driver_sql(
            "INSERT INTO blobs (blob_id, sha256, md5, size, refcount, created_at) VALUES "
            f"('blob{bid}', 'sha{bid}', 'm', 1, 1, CURRENT_TIMESTAMP)"
        )
        conn.exec_driver_sql(
            "INSERT INTO versions (file_id, bucket_id, key, blob_id, size, etag, sha256,"
            " content_type, user_metadata, created_at, created_by)"
            f" VALUES ('f{bid}', {bid}, 'k', 'blob{bid}', 1, 'm', 'sha{bid}',"
            " 'text/plain', '{}', CURRENT_TIMESTAMP, 'me')"
        )
        seq = conn.exec_driver_sql(f"SELECT id FROM versions WHERE file_id = 'f{bid}'").scalar()
        conn.exec_driver_sql(
            f"INSERT INTO object_keys (bucket_id, key, current_id) VALUES ({bid}, 'k', {seq})"
        )


def test_restore_in_an_unversioned_bucket_is_replaced_by_the_next_write(
    index: ObjectIndex,
) -> None:
    index.create_bucket("u", versioning=False)  # a REST bucket without versioning
    first = index.commit_version(new_version("u", "k", b"1")).version
    restored = index.restore_version(first.file_id, "restorer").version
    assert restored.unversioned
    index.commit_version(new_version("u", "k", b"22"))
    assert bodies(index, "u", "k") == [(2, True)]  # one version per key, as before


def test_in_trash(index: ObjectIndex) -> None:
    index.create_bucket("b")
    assert not index.in_trash("b", "k")  # no such key
    index.commit_version(new_version("b", "k", b"1"))
    assert not index.in_trash("b", "k")
    index.delete_key("b", "k")
    assert index.in_trash("b", "k")
