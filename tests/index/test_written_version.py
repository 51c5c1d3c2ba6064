"""A commit answers with the version as the index holds it.

On SQLite `commit_version` builds its answer from what it wrote instead of reading the
row back (index/writes.py, `_as_written`); every field must equal the read, whatever
the upload carried. On PostgreSQL the answer is the read itself: the same assertions
hold there too (the `index` fixture runs both).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from tfstorage.domain.conditions import WriteCondition
from tfstorage.domain.object_lock import (
    COMPLIANCE,
    GOVERNANCE,
    DefaultRetention,
    ObjectLockConfig,
    VersionLock,
)
from tfstorage.domain.records import CommitResult, NewVersion, ObjectVersion
from tfstorage.domain.uploads import PartLayout
from tfstorage.index import ObjectIndex
from tfstorage.index.batch import BatchIndex, CopyItem
from tfstorage.index.bucket_config import BucketConfigIndex
from tfstorage.index.integrity import IntegrityIndex

from .builders import new_version


def _as_read(index: ObjectIndex, answered: ObjectVersion) -> ObjectVersion:
    return index.get_version(answered.file_id)


def _commit_and_compare(index: ObjectIndex, new: NewVersion) -> ObjectVersion:
    answered = index.commit_version(new).version
    assert dataclasses.asdict(answered) == dataclasses.asdict(_as_read(index, answered))
    return answered


@pytest.mark.parametrize("versioning", [True, False], ids=["versioned", "unversioned"])
def test_a_plain_upload_answers_what_is_read_back(index: ObjectIndex, versioning: bool) -> None:
    index.create_bucket("b", versioning=versioning)
    first = _commit_and_compare(index, new_version("b", "k", b"one"))
    assert first.is_latest and first.created_at.tzinfo is not None
    # A second version of the key (replacing the null version when unversioned).
    second = _commit_and_compare(index, new_version("b", "k", b"two"))
    assert second.seq > first.seq and second.unversioned is not versioning


def test_metadata_tags_and_headers_come_back_as_the_index_keeps_them(index: ObjectIndex) -> None:
    index.create_bucket("b")
    new = new_version(
        "b",
        "data/x.parquet",
        b"rows",
        content_type="application/vnd.apache.parquet",
        # Keys out of order, nested values, a tuple and a big float: the index's JSON
        # gives keys back sorted, a tuple as a list, the float as the same float.
        metadata={"zeta": "1", "alpha": {"b": [1, 2], "a": None}, "t": (1, 2), "f": 1e16},
        tags={"team": "vision", "stage": "raw"},
    )
    new = dataclasses.replace(
        new,
        content_headers={"Cache-Control": "no-cache", "Content-Disposition": "inline"},
        parts=PartLayout("0123456789abcdef0123456789abcdef-2", (5, 3)),
    )
    version = _commit_and_compare(index, new)
    assert list(version.metadata) == ["alpha", "f", "t", "zeta"]
    assert version.metadata["t"] == [1, 2] and version.parts_etag is not None


def test_a_conditional_write_answers_what_is_read_back(index: ObjectIndex) -> None:
    index.create_bucket("b")
    created = dataclasses.replace(
        new_version("b", "k", b"1"), condition=WriteCondition(if_none_match="*")
    )
    first = _commit_and_compare(index, created)
    replaced = dataclasses.replace(
        new_version("b", "k", b"2"), condition=WriteCondition(if_match=frozenset({first.etag}))
    )
    assert _commit_and_compare(index, replaced).is_latest


def test_locks_asked_for_or_by_default_come_back_as_stored(index: ObjectIndex) -> None:
    index.create_bucket("locked")
    BucketConfigIndex(index.engine).set_object_lock(
        "locked", ObjectLockConfig(DefaultRetention(COMPLIANCE, days=3))
    )
    by_default = _commit_and_compare(index, new_version("locked", "a"))
    assert by_default.retention_mode == COMPLIANCE and by_default.retain_until is not None
    until = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    asked = dataclasses.replace(
        new_version("locked", "b"), lock=VersionLock(GOVERNANCE, until, legal_hold=True)
    )
    locked = _commit_and_compare(index, asked)
    assert (locked.retention_mode, locked.retain_until, locked.legal_hold) == (
        GOVERNANCE,
        until,
        True,
    )
    held = dataclasses.replace(new_version("locked", "c"), lock=VersionLock(legal_hold=True))
    assert _commit_and_compare(index, held).legal_hold


def test_a_duplicate_of_a_damaged_blob_answers_with_its_damage(index: ObjectIndex) -> None:
    """A reused blob may carry a damage mark: the answer must say so, as a read does."""
    index.create_bucket("b")
    first = index.commit_version(new_version("b", "k", b"same")).version
    IntegrityIndex(index.engine).mark_damaged(first.blob_id, "corrupt")
    again = index.commit_version(new_version("b", "other", b"same"))
    assert again.duplicate_blob_id is not None
    assert again.version.damage == "corrupt" == _as_read(index, again.version).damage


def test_a_copy_of_a_damaged_blob_answers_with_its_damage(index: ObjectIndex) -> None:
    """A copy commits the source's own blob id (not a duplicate, yet not a new blob)."""
    index.create_bucket("b")
    source = index.commit_version(new_version("b", "src", b"bytes")).version
    IntegrityIndex(index.engine).mark_damaged(source.blob_id, "truncated")
    (copied,) = BatchIndex(index.engine).copy_versions([CopyItem(source, "b", "dst", True, "c")])
    assert isinstance(copied, CommitResult) and copied.duplicate_blob_id is None
    assert copied.version.damage == "truncated"
    assert dataclasses.asdict(copied.version) == dataclasses.asdict(_as_read(index, copied.version))
