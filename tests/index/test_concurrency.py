from __future__ import annotations

import threading

from tfstorage.domain.records import CommitResult
from tfstorage.index import ObjectIndex

from .builders import new_version, refcounts

THREADS = 8
PER_THREAD = 5


def test_concurrent_commits_to_one_key_with_one_content(index: ObjectIndex) -> None:
    index.create_bucket("models")
    barrier = threading.Barrier(THREADS)
    results: list[CommitResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer() -> None:
        try:
            barrier.wait()
            for _ in range(PER_THREAD):
                result = index.commit_version(new_version("models", "ckpt.pt", b"same"))
                with lock:
                    results.append(result)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = THREADS * PER_THREAD
    all_versions = index.list_versions("models", "ckpt.pt")
    assert len(all_versions) == total
    head = index.resolve_latest("models", "ckpt.pt")
    assert head.seq == max(r.version.seq for r in results)
    assert [v.file_id for v in all_versions if v.is_latest] == [head.file_id]
    kept = [r for r in results if r.duplicate_blob_id is None]
    assert len(kept) == 1
    assert refcounts(index) == {kept[0].version.blob_id: total}
    assert {v.blob_id for v in all_versions} == {kept[0].version.blob_id}
    assert index.stats().buckets["models"].objects == 1


def test_concurrent_commits_of_different_content_keep_the_max_seq(index: ObjectIndex) -> None:
    index.create_bucket("models")
    barrier = threading.Barrier(THREADS)
    seqs: list[int] = []
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_THREAD):
                data = f"{n}-{i}".encode()
                seqs.append(index.commit_version(new_version("models", "k", data)).version.seq)
                if n == 0 and i == 2:  # a soft delete in the middle of the stream
                    index.delete_key("models", "k")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    listed = index.list_versions("models", "k")
    assert len(listed) == THREADS * PER_THREAD
    head = [v for v in listed if v.is_latest]
    assert [v.seq for v in head] == [max(seqs)]
    assert sorted(refcounts(index).values()) == [1] * (THREADS * PER_THREAD)


def test_concurrent_commits_deletes_and_claims(index: ObjectIndex) -> None:
    # Claims racing with commits of the same content must never take a referenced blob.
    index.create_bucket("models")
    errors: list[BaseException] = []
    claimed: list[str] = []
    stop = threading.Event()

    def churn(n: int) -> None:
        try:
            for _ in range(6):
                version = index.commit_version(new_version("models", f"k{n}", b"same")).version
                index.delete_version(version.file_id)
        except BaseException as exc:
            errors.append(exc)

    def claimer() -> None:
        try:
            while not stop.is_set():
                claimed.extend(index.claim_unreferenced_blobs())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    gc = threading.Thread(target=claimer)
    gc.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    gc.join()
    assert errors == []
    assert all(count >= 0 for count in refcounts(index).values())
    assert len(claimed) == len(set(claimed))
