from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tfstorage.errors import InvalidArgument, NoSuchBucket, NoSuchKey, NoSuchVersion
from tfstorage.index import ObjectIndex

from .builders import new_version, refcounts


@pytest.fixture
def models(index: ObjectIndex) -> ObjectIndex:
    index.create_bucket("models")
    return index


def test_commit_and_get(models: ObjectIndex) -> None:
    new = new_version(
        "models",
        "resnet/v1.pt",
        b"weights",
        content_type="application/x-pytorch",
        metadata={"epochs": 10, "nested": {"lr": 0.1}},
        tags={"team": "vision", "stage": "prod"},
        created_by="alice",
    )
    result = models.commit_version(new)
    version = result.version
    assert result.duplicate_blob_id is None
    assert len(version.file_id) == 32
    assert (version.bucket, version.key, version.blob_id) == ("models", "resnet/v1.pt", new.blob_id)
    assert (version.size, version.etag, version.sha256) == (7, new.md5, new.sha256)
    assert version.content_type == "application/x-pytorch"
    assert version.metadata == {"epochs": 10, "nested": {"lr": 0.1}}
    assert version.tags == {"team": "vision", "stage": "prod"}
    assert version.created_by == "alice"
    assert version.created_at.tzinfo == UTC
    assert version.is_latest and version.deleted_at is None and version.visible
    assert models.get_version(version.file_id) == version
    assert models.resolve_latest("models", "resnet/v1.pt") == version


def test_commit_into_missing_bucket(models: ObjectIndex) -> None:
    with pytest.raises(NoSuchBucket):
        models.commit_version(new_version("nope", "k"))
    assert refcounts(models) == {}


def test_unknown_lookups(models: ObjectIndex) -> None:
    with pytest.raises(NoSuchVersion):
        models.get_version("0" * 32)
    with pytest.raises(NoSuchVersion):  # PostgreSQL refuses NUL: not a 500 from the index
        models.get_version("\x00{")
    with pytest.raises(NoSuchKey):
        models.resolve_latest("models", "missing")
    with pytest.raises(NoSuchBucket):
        models.resolve_latest("nope", "missing")
    with pytest.raises(NoSuchKey):
        models.list_versions("models", "missing")
    with pytest.raises(NoSuchKey):
        models.delete_key("models", "missing")
    with pytest.raises(NoSuchKey):
        models.restore_key("models", "missing")
    for call in (models.delete_version, models.update_version):
        with pytest.raises(NoSuchVersion):
            call("0" * 32)
    with pytest.raises(NoSuchVersion):
        models.restore_version("0" * 32, "bob")


def test_overwrite_orders_versions(models: ObjectIndex) -> None:
    committed = [models.commit_version(new_version("models", "k", bytes([i]))) for i in range(4)]
    seqs = [c.version.seq for c in committed]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    latest = models.resolve_latest("models", "k")
    assert latest.file_id == committed[-1].version.file_id
    listed = models.list_versions("models", "k")
    assert [v.seq for v in listed] == seqs[::-1]
    assert [v.is_latest for v in listed] == [True, False, False, False]


def test_dedup_shares_one_blob(models: ObjectIndex) -> None:
    first = models.commit_version(new_version("models", "a", b"same bytes"))
    second_new = new_version("models", "b", b"same bytes")
    second = models.commit_version(second_new)
    assert first.duplicate_blob_id is None
    assert second.duplicate_blob_id == second_new.blob_id
    assert second.version.blob_id == first.version.blob_id
    assert refcounts(models) == {first.version.blob_id: 2}
    stats = models.stats()
    assert (stats.blobs, stats.stored_bytes, stats.logical_bytes) == (1, 10, 20)

    models.delete_version(first.version.file_id)
    assert refcounts(models) == {first.version.blob_id: 1}
    assert models.claim_unreferenced_blobs() == []
    models.delete_version(second.version.file_id)
    assert refcounts(models) == {first.version.blob_id: 0}
    assert models.known_blob_ids([first.version.blob_id]) == {first.version.blob_id}
    assert models.claim_unreferenced_blobs() == [first.version.blob_id]
    assert models.known_blob_ids([first.version.blob_id]) == set()
    # After the claim the same content is stored afresh under the new blob.
    third_new = new_version("models", "c", b"same bytes")
    third = models.commit_version(third_new)
    assert third.duplicate_blob_id is None
    assert refcounts(models) == {third_new.blob_id: 1}


def test_soft_delete_and_restore_key(models: ObjectIndex) -> None:
    old = models.commit_version(new_version("models", "k", b"1")).version
    head = models.commit_version(new_version("models", "k", b"2")).version
    deleted = models.delete_key("models", "k")
    assert deleted.file_id == head.file_id
    assert deleted.deleted_at is not None and deleted.deleted_at.tzinfo == UTC
    assert not deleted.visible
    with pytest.raises(NoSuchKey):
        models.resolve_latest("models", "k")
    with pytest.raises(NoSuchKey):
        models.delete_key("models", "k")
    assert models.list_objects("models").objects == []
    listed = models.list_versions("models", "k")
    assert [v.file_id for v in listed] == [head.file_id, old.file_id]
    assert all(v.deleted_at == deleted.deleted_at for v in listed)
    # get_version still serves a deleted key's versions by file_id.
    assert models.get_version(old.file_id).deleted_at == deleted.deleted_at

    restored = models.restore_key("models", "k")
    assert restored.file_id == head.file_id and restored.visible
    assert models.restore_key("models", "k") == restored  # no-op when live
    assert models.resolve_latest("models", "k") == restored


def test_commit_after_delete_revives_key(models: ObjectIndex) -> None:
    models.commit_version(new_version("models", "k", b"1"))
    models.delete_key("models", "k")
    fresh = models.commit_version(new_version("models", "k", b"2")).version
    assert fresh.visible
    assert models.resolve_latest("models", "k") == fresh


def test_restore_version(models: ObjectIndex) -> None:
    old = models.commit_version(
        new_version("models", "k", b"old", metadata={"m": 1}, tags={"t": "1"})
    ).version
    models.commit_version(new_version("models", "k", b"new"))
    models.delete_key("models", "k")
    result = models.restore_version(old.file_id, "bob")
    restored = result.version
    assert result.duplicate_blob_id is None
    assert restored.file_id != old.file_id and restored.seq > old.seq
    assert restored.blob_id == old.blob_id and restored.sha256 == old.sha256
    assert (restored.metadata, restored.tags) == ({"m": 1}, {"t": "1"})
    assert restored.created_by == "bob"
    assert restored.visible
    assert models.resolve_latest("models", "k") == restored
    assert refcounts(models)[old.blob_id] == 2
    assert len(models.list_versions("models", "k")) == 3


def test_delete_version_moves_head(models: ObjectIndex) -> None:
    v1 = models.commit_version(new_version("models", "k", b"1")).version
    v2 = models.commit_version(new_version("models", "k", b"2")).version
    v3 = models.commit_version(new_version("models", "k", b"3")).version

    gone = models.delete_version(v2.file_id)  # not the head: nothing moves
    assert gone.file_id == v2.file_id and not gone.is_latest
    assert models.resolve_latest("models", "k").file_id == v3.file_id
    with pytest.raises(NoSuchVersion):
        models.get_version(v2.file_id)

    models.delete_key("models", "k")
    gone = models.delete_version(v3.file_id)
    assert gone.is_latest
    head = models.list_versions("models", "k")
    assert [v.file_id for v in head] == [v1.file_id]
    assert head[0].is_latest and head[0].deleted_at is not None  # still in the trash
    models.restore_key("models", "k")
    assert models.resolve_latest("models", "k").file_id == v1.file_id

    models.delete_version(v1.file_id)
    with pytest.raises(NoSuchKey):
        models.list_versions("models", "k")
    with pytest.raises(NoSuchKey):
        models.restore_key("models", "k")
    assert sorted(refcounts(models).values()) == [0, 0, 0]
    # The key can be written again from scratch.
    again = models.commit_version(new_version("models", "k", b"4")).version
    assert again.seq > v3.seq and again.visible


def test_update_version(models: ObjectIndex) -> None:
    v = models.commit_version(
        new_version("models", "k", metadata={"a": 1}, tags={"x": "1", "y": "2"})
    ).version
    same = models.update_version(v.file_id)
    assert same == v
    changed = models.update_version(v.file_id, tags={"z": "3"})
    assert changed.tags == {"z": "3"} and changed.metadata == {"a": 1}
    changed = models.update_version(v.file_id, metadata={"b": [1, 2]}, content_type="text/plain")
    assert changed.metadata == {"b": [1, 2]} and changed.content_type == "text/plain"
    assert changed.tags == {"z": "3"}
    assert models.update_version(v.file_id, tags={}).tags == {}
    assert models.get_version(v.file_id).tags == {}


def test_known_blob_ids_batches(models: ObjectIndex) -> None:
    stored = {
        models.commit_version(new_version("models", f"k{i}", bytes([i]))).version.blob_id
        for i in range(3)
    }
    asked = [f"{i:032x}" for i in range(1200)] + sorted(stored)
    assert models.known_blob_ids(iter(asked)) == stored
    assert models.known_blob_ids([]) == set()


def test_claim_limit(models: ObjectIndex) -> None:
    for i in range(5):
        models.delete_version(
            models.commit_version(new_version("models", "k", bytes([i]))).version.file_id
        )
    first = models.claim_unreferenced_blobs(limit=3)
    rest = models.claim_unreferenced_blobs()
    assert len(first) == 3 and len(rest) == 2 and not set(first) & set(rest)
    with pytest.raises(InvalidArgument):
        models.claim_unreferenced_blobs(limit=0)


def test_purge_deleted(models: ObjectIndex) -> None:
    models.create_bucket("other")
    shared = models.commit_version(new_version("other", "keep", b"shared")).version
    for key in ("a", "b"):
        models.commit_version(new_version("models", key, b"shared", tags={"t": key}))
        models.commit_version(new_version("models", key, key.encode()))
    models.commit_version(new_version("models", "live", b"live"))
    models.delete_key("models", "a")
    models.delete_key("models", "b")

    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert models.purge_deleted(datetime.now(UTC) - timedelta(hours=1)) == 0
    assert models.purge_deleted(cutoff, limit=1) == 2
    assert models.purge_deleted(cutoff) == 2
    assert models.purge_deleted(cutoff) == 0
    for key in ("a", "b"):
        with pytest.raises(NoSuchKey):
            models.list_versions("models", key)
    assert models.resolve_latest("models", "live").visible
    counts = refcounts(models)
    assert counts[shared.blob_id] == 1
    assert sorted(counts.values()) == [0, 0, 1, 1]


def test_stats(models: ObjectIndex) -> None:
    models.create_bucket("empty")
    models.create_bucket("data")
    models.commit_version(new_version("models", "a", b"12345"))
    models.commit_version(new_version("models", "a", b"123"))
    models.commit_version(new_version("models", "b", b"12345"))  # duplicate of the first
    models.commit_version(new_version("data", "gone", b"1234567"))
    models.delete_key("data", "gone")
    stats = models.stats()
    assert set(stats.buckets) == {"models", "empty", "data"}
    assert stats.buckets["empty"].objects == 0 and stats.buckets["empty"].version_bytes == 0
    m = stats.buckets["models"]
    assert (m.objects, m.bytes, m.versions, m.version_bytes) == (2, 8, 3, 13)
    d = stats.buckets["data"]
    assert (d.objects, d.bytes, d.versions, d.version_bytes) == (0, 0, 1, 7)
    assert stats.logical_bytes == 20
    assert (stats.blobs, stats.stored_bytes) == (3, 15)
