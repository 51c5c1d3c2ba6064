"""UploadIndex on SQLite and PostgreSQL: sessions, parts, limits, claims, and the
session closing inside the object's commit (both happen, or neither)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tfstorage.domain.records import NewVersion
from tfstorage.domain.uploads import UploadPart, UploadSession
from tfstorage.errors import (
    Conflict,
    EntityTooLarge,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    QuotaExceeded,
)
from tfstorage.index.object_index import ObjectIndex
from tfstorage.index.uploads import UploadIndex

MiB = 1024 * 1024


def session_in(bucket: str, **fields: object) -> UploadSession:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "upload_id": uuid.uuid4().hex,
        "bucket": bucket,
        "key": "k/ckpt.bin",
        "blob_id": uuid.uuid4().hex,
        "backend_upload": uuid.uuid4().hex,
        "content_type": None,
        "metadata": {"a": 1},
        "tags": {"t": "v"},
        "declared_size": None,
        "declared_sha256": None,
        "part_size": None,
        "created_by": "tester",
        "created_at": now,
        "touched_at": now,
    }
    values.update(fields)
    return UploadSession(**values)  # type: ignore[arg-type]


def part(number: int, size: int, tag: str = "a") -> UploadPart:
    return UploadPart(
        number, size, (tag * 32)[:32], (tag * 64)[:64], f"{number}-{tag}", datetime.now(UTC)
    )


@pytest.fixture
def uploads(index: ObjectIndex) -> UploadIndex:
    return UploadIndex(index.engine)


def new_bucket(index: ObjectIndex, **options: object) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    index.create_bucket(name, **options)  # type: ignore[arg-type]
    return name


def test_parts_are_recorded_replaced_and_listed(index: ObjectIndex, uploads: UploadIndex) -> None:
    bucket = new_bucket(index)
    session = session_in(bucket)
    uploads.create_session(session)
    assert uploads.record_part(session.upload_id, part(2, 7), max_size=100 * MiB) is None
    assert uploads.record_part(session.upload_id, part(1, 5 * MiB), max_size=100 * MiB) is None
    earlier = uploads.record_part(session.upload_id, part(2, 9, "b"), max_size=100 * MiB)
    assert earlier is not None and (earlier.size, earlier.handle) == (7, "2-a")
    found = uploads.get_session(session.upload_id)
    assert [(p.part_number, p.size, p.handle) for p in found.parts] == [
        (1, 5 * MiB, "1-a"),
        (2, 9, "2-b"),
    ]
    assert (found.metadata, found.tags, found.stored_bytes) == ({"a": 1}, {"t": "v"}, 5 * MiB + 9)
    assert [s.upload_id for s in uploads.list_sessions(bucket)] == [session.upload_id]
    assert session.backend_upload in uploads.live_backend_uploads()
    with pytest.raises(NoSuchUpload):
        uploads.get_session(uuid.uuid4().hex)
    with pytest.raises(NoSuchBucket):
        uploads.create_session(session_in("no-such-bucket"))


def test_totals_are_checked_as_parts_arrive(index: ObjectIndex, uploads: UploadIndex) -> None:
    bucket = new_bucket(index, quota_bytes=20)
    session = session_in(bucket, declared_size=15)
    uploads.create_session(session)
    uploads.record_part(session.upload_id, part(1, 10), max_size=18)
    with pytest.raises(EntityTooLarge):
        uploads.record_part(session.upload_id, part(2, 9), max_size=18)  # MAX_FILE_SIZE
    with pytest.raises(EntityTooLarge):
        uploads.record_part(session.upload_id, part(2, 6), max_size=100)  # declared size
    uploads.record_part(session.upload_id, part(1, 3), max_size=18)  # replaced: 3, not 13
    uploads.record_part(session.upload_id, part(2, 12), max_size=100)
    open_ended = session_in(bucket)
    uploads.create_session(open_ended)
    with pytest.raises(QuotaExceeded):
        uploads.record_part(open_ended.upload_id, part(1, 21), max_size=100)
    with pytest.raises(QuotaExceeded):
        uploads.create_session(session_in(bucket, declared_size=21))
    assert [p.size for p in uploads.get_session(session.upload_id).parts] == [3, 12]


def test_part_size_is_settled_once(index: ObjectIndex, uploads: UploadIndex) -> None:
    session = session_in(new_bucket(index))
    uploads.create_session(session)
    assert uploads.settle_part_size(session.upload_id, 8 * MiB) == 8 * MiB
    assert uploads.settle_part_size(session.upload_id, 5 * MiB) == 8 * MiB
    assert uploads.get_session(session.upload_id).part_size == 8 * MiB


def test_one_completion_at_a_time(index: ObjectIndex, uploads: UploadIndex) -> None:
    session = session_in(new_bucket(index))
    uploads.create_session(session)
    uploads.claim(session.upload_id)
    with pytest.raises(Conflict):
        uploads.claim(session.upload_id)
    with pytest.raises(Conflict):
        uploads.record_part(session.upload_id, part(1, 1), max_size=100)
    uploads.release(session.upload_id)
    uploads.record_part(session.upload_id, part(1, 1), max_size=100)
    uploads.claim(session.upload_id)


def test_the_session_closes_inside_the_commit(index: ObjectIndex, uploads: UploadIndex) -> None:
    bucket = new_bucket(index)
    session = session_in(bucket)
    uploads.create_session(session)
    uploads.record_part(session.upload_id, part(1, 3), max_size=100)
    new = NewVersion(
        bucket=bucket,
        key=session.key,
        blob_id=session.blob_id,
        size=3,
        md5="c" * 32,
        sha256=uuid.uuid4().hex * 2,
        content_type="application/octet-stream",
        metadata={},
        tags={},
        created_by="tester",
    )
    # Closed meanwhile (an abort): the commit is rolled back with the refusal.
    stale = uploads.closer(session.upload_id, "another-backend-upload")
    with pytest.raises(NoSuchUpload):
        index.commit_versions([new], then=stale)
    with pytest.raises(NoSuchKey):
        index.resolve_latest(bucket, session.key)
    assert uploads.get_session(session.upload_id).parts

    [result] = index.commit_versions(
        [new], then=uploads.closer(session.upload_id, session.backend_upload)
    )
    assert index.resolve_latest(bucket, session.key).file_id == result.version.file_id
    with pytest.raises(NoSuchUpload):
        uploads.get_session(session.upload_id)
    # A second completion finds no session, and commits nothing.
    with pytest.raises(NoSuchUpload):
        index.commit_versions([new], then=uploads.closer(session.upload_id, session.backend_upload))
    assert len(index.list_versions(bucket, session.key)) == 1


def test_idle_sessions_and_deletion(index: ObjectIndex, uploads: UploadIndex) -> None:
    bucket = new_bucket(index)
    old = session_in(bucket, touched_at=datetime.now(UTC) - timedelta(days=8))
    fresh = session_in(bucket)
    uploads.create_session(old)
    uploads.create_session(fresh)
    uploads.record_part(old.upload_id, part(1, 1), max_size=100)  # touches it: now fresh
    stale = session_in(bucket, touched_at=datetime.now(UTC) - timedelta(days=8))
    uploads.create_session(stale)
    idle = uploads.idle_sessions(datetime.now(UTC) - timedelta(days=7))
    assert stale.upload_id in idle and old.upload_id not in idle and fresh.upload_id not in idle
    gone = uploads.delete_session(stale.upload_id)
    assert gone.upload_id == stale.upload_id
    with pytest.raises(NoSuchUpload):
        uploads.delete_session(stale.upload_id)
    assert {s.upload_id for s in uploads.list_sessions(bucket)} == {old.upload_id, fresh.upload_id}
