"""Damage marks and the scrub's state and lease, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete

from tfstorage.domain.records import NewVersion
from tfstorage.index import ObjectIndex
from tfstorage.index.integrity import IntegrityIndex, StoredBlob
from tfstorage.index.reads import utcnow
from tfstorage.index.tables import scrub_state


def _commit(index: ObjectIndex, key: str, n: int) -> str:
    result = index.commit_version(
        NewVersion(
            bucket="models",
            key=key,
            blob_id=f"{n:032x}",
            size=n,
            md5=f"{n:032x}",
            sha256=f"{n:064x}",
            content_type="application/octet-stream",
            metadata={},
            tags={},
            created_by="test",
        )
    )
    return result.version.file_id


def _integrity(index: ObjectIndex) -> IntegrityIndex:
    with index.engine.begin() as conn:
        conn.execute(delete(scrub_state))
    return IntegrityIndex(index.engine)


def test_marks_are_seen_by_reads_and_cleared_by_good_bytes(index: ObjectIndex) -> None:
    integrity = _integrity(index)
    index.create_bucket("models")
    file_id = _commit(index, "a", 1)
    _commit(index, "b", 2)
    blob = f"{1:032x}"
    assert index.get_version(file_id).damage is None
    assert integrity.mark_damaged(blob, "corrupt") is True
    assert integrity.mark_damaged(blob, "corrupt") is False  # already so: found_at kept
    assert index.get_version(file_id).damage == "corrupt"
    assert index.resolve_latest("models", "a").damage == "corrupt"
    assert integrity.damage_counts() == {"corrupt": 1, "truncated": 0, "missing": 0}
    [damaged] = integrity.damaged_blobs()
    assert damaged.blob_id == blob and damaged.versions[0].file_id == file_id
    assert integrity.mark_verified(blob) is True
    assert integrity.mark_verified(blob) is False
    assert index.get_version(file_id).damage is None
    assert integrity.damaged_blobs() == []


def test_damage_read_before_a_later_verification_is_not_recorded(index: ObjectIndex) -> None:
    integrity = _integrity(index)
    index.create_bucket("models")
    _commit(index, "a", 1)
    blob = f"{1:032x}"
    read_at = utcnow()
    assert integrity.mark_verified(blob) is False  # rewritten and verified after that read
    assert integrity.mark_damaged(blob, "missing", read_since=read_at) is False
    assert integrity.damage_of(blob) is None
    # Bytes read after the last verification: the damage is recorded.
    assert integrity.mark_damaged(blob, "missing", read_since=utcnow()) is True
    assert integrity.damage_of(blob) == "missing"


def test_the_verdict_on_the_later_read_bytes_wins(index: ObjectIndex) -> None:
    integrity = _integrity(index)
    index.create_bucket("models")
    _commit(index, "a", 1)
    blob = f"{1:032x}"
    slow_check_began = utcnow()  # a long check reads good bytes from here ...
    damage_read_at = slow_check_began + timedelta(seconds=1)
    # ... a quicker one reads the bytes after it, finds them damaged, records it first,
    assert integrity.mark_damaged(blob, "corrupt", read_since=damage_read_at) is True
    # and the long check's "good" comes last: it must not clear the newer finding.
    assert integrity.mark_verified(blob, read_since=slow_check_began) is False
    assert integrity.damage_of(blob) == "corrupt"
    # A check that began reading after the damage was found does clear it.
    assert integrity.mark_verified(blob, read_since=damage_read_at + timedelta(seconds=1))
    assert integrity.damage_of(blob) is None
    # And damage read after that good verdict's read is recorded, though it comes later.
    later = damage_read_at + timedelta(seconds=2)
    assert integrity.mark_damaged(blob, "truncated", read_since=later) is True


def test_pages_in_blob_id_order(index: ObjectIndex) -> None:
    integrity = _integrity(index)
    index.create_bucket("models")
    for n in (5, 3, 9, 1):
        _commit(index, f"k{n}", n)
    first = integrity.blobs_after("", 2)
    assert [b.size for b in first] == [1, 3]
    assert [b.size for b in integrity.blobs_after(first[-1].blob_id, 10)] == [5, 9]
    nine = StoredBlob(f"{9:032x}", 9, f"{9:032x}", f"{9:064x}")
    assert integrity.stored_blob(nine.blob_id) == nine


def test_one_lease_holder_and_fenced_progress(index: ObjectIndex) -> None:
    integrity = _integrity(index)
    soon = utcnow() + timedelta(minutes=1)
    assert integrity.acquire_scrub_lease("a", soon)
    assert not integrity.acquire_scrub_lease("b", soon)
    assert integrity.acquire_scrub_lease("a", soon)  # renewal
    started = utcnow()
    assert integrity.save_scrub_progress(
        "a", cursor="c" * 32, pass_started_at=started, progress={"verified": 1}, lease_until=soon
    )
    assert not integrity.save_scrub_progress(
        "b", cursor="d" * 32, pass_started_at=started, progress={}, lease_until=soon
    )
    state = integrity.scrub_state()
    assert (state.cursor, state.progress, state.lease_holder) == ("c" * 32, {"verified": 1}, "a")
    integrity.release_scrub_lease("a")
    assert integrity.acquire_scrub_lease("b", utcnow() - timedelta(seconds=1))
    assert integrity.acquire_scrub_lease("c", soon)  # b's lease had run out
    assert integrity.scrub_state().cursor == "c" * 32  # the place survives holders
