from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from tfstorage.errors import BucketAlreadyExists, BucketNotEmpty, NoSuchBucket, NoSuchKey
from tfstorage.index import ObjectIndex

from .builders import new_version, refcounts


def test_create_and_get(index: ObjectIndex) -> None:
    before = datetime.now(UTC)
    created = index.create_bucket(
        "models",
        allowed_types=[".pt", ".onnx"],
        versioning=False,
        quota_bytes=10**12,
        quota_objects=5000,
        description="trained weights",
    )
    assert created == index.get_bucket("models")
    assert created.allowed_types == (".pt", ".onnx")
    assert created.versioning is False
    assert (created.quota_bytes, created.quota_objects) == (10**12, 5000)
    assert created.description == "trained weights"
    assert before <= created.created_at <= datetime.now(UTC)


def test_defaults(index: ObjectIndex) -> None:
    bucket = index.create_bucket("jobs")
    assert bucket.versioning is True
    assert bucket.allowed_types is None
    assert (bucket.quota_bytes, bucket.quota_objects, bucket.description) == (None, None, "")


def test_create_twice_conflicts(index: ObjectIndex) -> None:
    index.create_bucket("models")
    with pytest.raises(BucketAlreadyExists):
        index.create_bucket("models")


def test_missing_bucket(index: ObjectIndex) -> None:
    with pytest.raises(NoSuchBucket):
        index.get_bucket("nope")
    with pytest.raises(NoSuchBucket):
        index.update_bucket("nope", description="x")
    with pytest.raises(NoSuchBucket):
        index.delete_bucket("nope", force=True)


def test_ensure_bucket_is_idempotent(index: ObjectIndex) -> None:
    first = index.ensure_bucket("datasets", allowed_types=[".csv"])
    again = index.ensure_bucket("datasets", allowed_types=[".parquet"])
    assert first == again
    assert again.allowed_types == (".csv",)


def test_ensure_bucket_races(index: ObjectIndex) -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            index.ensure_bucket("shared")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [b.name for b in index.list_buckets()] == ["shared"]


def test_list_buckets_by_name(index: ObjectIndex) -> None:
    for name in ["models", "artifacts", "jobs"]:
        index.create_bucket(name)
    assert [b.name for b in index.list_buckets()] == ["artifacts", "jobs", "models"]


def test_update_bucket(index: ObjectIndex) -> None:
    index.create_bucket("models", quota_bytes=10)
    updated = index.update_bucket(
        "models", allowed_types=[".pt"], versioning=False, quota_bytes=None, description="d"
    )
    assert updated.allowed_types == (".pt",)
    assert updated.versioning is False
    assert updated.quota_bytes is None
    assert updated.description == "d"
    assert index.update_bucket("models") == updated
    with pytest.raises(TypeError, match="colour"):
        index.update_bucket("models", colour="red")


def test_delete_empty_bucket(index: ObjectIndex) -> None:
    index.create_bucket("models")
    index.delete_bucket("models", force=False)
    with pytest.raises(NoSuchBucket):
        index.get_bucket("models")


def test_delete_bucket_with_live_key_needs_force(index: ObjectIndex) -> None:
    index.create_bucket("models")
    index.create_bucket("other")
    shared = index.commit_version(new_version("models", "a.pt", b"same")).version
    index.commit_version(new_version("models", "a.pt", b"second"))
    kept = index.commit_version(new_version("other", "b.pt", b"same")).version
    with pytest.raises(BucketNotEmpty):
        index.delete_bucket("models", force=False)
    index.delete_bucket("models", force=True)
    with pytest.raises(NoSuchBucket):
        index.get_bucket("models")
    # The blob shared with the other bucket keeps its reference; the other is claimable.
    counts = refcounts(index)
    assert counts[shared.blob_id] == 1
    assert sorted(counts.values()) == [0, 1]
    assert len(index.claim_unreferenced_blobs()) == 1
    assert index.resolve_latest("other", "b.pt") == kept


def test_delete_bucket_with_only_trash(index: ObjectIndex) -> None:
    index.create_bucket("models")
    index.commit_version(new_version("models", "a.pt", b"x", tags={"k": "v"}))
    index.delete_key("models", "a.pt")
    index.delete_bucket("models", force=False)
    assert index.list_buckets() == []
    assert index.stats().logical_bytes == 0
    assert list(refcounts(index).values()) == [0]
    # A bucket of the same name starts empty.
    index.create_bucket("models")
    with pytest.raises(NoSuchKey):
        index.list_versions("models", "a.pt")
