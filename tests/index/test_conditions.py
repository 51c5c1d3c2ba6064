"""Conditional writes judged inside the index transaction, on SQLite and PostgreSQL.

The races call the index directly from threads, so no check outside the transaction
can help: whatever decides the winner is the commit itself.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from tfstorage.domain.conditions import ANY, WriteCondition
from tfstorage.domain.records import CommitResult, NewVersion
from tfstorage.errors import NoSuchKey, PreconditionFailed
from tfstorage.index import ObjectIndex
from tfstorage.index.batch import BatchIndex, CopyItem

from .builders import new_version, refcounts

CREATE = WriteCondition(if_none_match=ANY)
THREADS = 8
ROUNDS = 5


def _when(new: NewVersion, condition: WriteCondition) -> NewVersion:
    return dataclasses.replace(new, condition=condition)


def _match(etag: str) -> WriteCondition:
    return WriteCondition(if_match=frozenset({etag}))


def test_create_only_if_absent(index: ObjectIndex) -> None:
    index.create_bucket("models")
    first = index.commit_version(_when(new_version("models", "a.pt", b"one"), CREATE))
    with pytest.raises(PreconditionFailed):
        index.commit_version(_when(new_version("models", "a.pt", b"two"), CREATE))
    # Refused whole: no version, no blob reference, the first one still latest.
    assert [v.file_id for v in index.list_versions("models", "a.pt")] == [first.version.file_id]
    assert refcounts(index) == {first.version.blob_id: 1}
    # A key in the trash counts as absent.
    index.delete_key("models", "a.pt")
    again = index.commit_version(_when(new_version("models", "a.pt", b"three"), CREATE))
    assert index.resolve_latest("models", "a.pt").file_id == again.version.file_id


def test_replace_only_that_version(index: ObjectIndex) -> None:
    index.create_bucket("models")
    with pytest.raises(PreconditionFailed):  # If-Match on a missing key (RFC 9110)
        index.commit_version(_when(new_version("models", "b.pt", b"x"), WriteCondition(ANY)))
    v1 = index.commit_version(new_version("models", "b.pt", b"v1")).version
    v2 = index.commit_version(_when(new_version("models", "b.pt", b"v2"), _match(v1.etag)))
    with pytest.raises(PreconditionFailed):  # stale: v1 is no longer the latest
        index.commit_version(_when(new_version("models", "b.pt", b"v3"), _match(v1.etag)))
    latest = index.resolve_latest("models", "b.pt")
    assert latest.file_id == v2.version.file_id
    assert len(index.list_versions("models", "b.pt")) == 2
    index.delete_key("models", "b.pt")  # a trashed key has no current ETag
    with pytest.raises(PreconditionFailed):
        index.commit_version(_when(new_version("models", "b.pt", b"v3"), _match(latest.etag)))


def test_conditional_delete_and_restore(index: ObjectIndex) -> None:
    index.create_bucket("models")
    v1 = index.commit_version(new_version("models", "c.pt", b"v1")).version
    v2 = index.commit_version(new_version("models", "c.pt", b"v2")).version
    with pytest.raises(PreconditionFailed):
        index.delete_key("models", "c.pt", _match(v1.etag))
    assert index.resolve_latest("models", "c.pt").file_id == v2.file_id
    index.delete_key("models", "c.pt", _match(v2.etag))
    with pytest.raises(NoSuchKey):
        index.resolve_latest("models", "c.pt")
    # Undelete only if still absent; restoring a version only over the expected latest.
    with pytest.raises(PreconditionFailed):
        index.restore_key("models", "c.pt", _match(v2.etag))
    index.restore_key("models", "c.pt", CREATE)
    with pytest.raises(PreconditionFailed):
        index.restore_version(v1.file_id, "tester", _match(v1.etag))
    restored = index.restore_version(v1.file_id, "tester", _match(v2.etag)).version
    assert index.resolve_latest("models", "c.pt").file_id == restored.file_id
    assert restored.etag == v1.etag


def test_copy_without_overwrite_skips_live_keys_only(index: ObjectIndex) -> None:
    index.create_bucket("models")
    src = index.commit_version(new_version("models", "src.pt", b"bytes")).version
    live = index.commit_version(new_version("models", "live.pt", b"old")).version
    index.commit_version(new_version("models", "trashed.pt", b"old"))
    index.delete_key("models", "trashed.pt")
    copies = BatchIndex(index.engine).copy_versions(
        [CopyItem(src, "models", key, False, "tester") for key in ("live.pt", "trashed.pt")]
    )
    assert copies[0] is None
    assert isinstance(copies[1], CommitResult)
    assert index.resolve_latest("models", "live.pt").file_id == live.file_id
    assert index.resolve_latest("models", "trashed.pt").etag == src.etag
    assert refcounts(index)[src.blob_id] == 2  # the skipped copy took no reference


def _race(
    index: ObjectIndex, make: Callable[[int], NewVersion]
) -> tuple[list[CommitResult], list[NewVersion]]:
    """THREADS commits at once; returns the winners and the refused versions."""
    barrier = threading.Barrier(THREADS)
    won: list[CommitResult] = []
    lost: list[NewVersion] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        new = make(n)
        try:
            barrier.wait(timeout=30)
            result = index.commit_version(new)
        except PreconditionFailed:
            with lock:
                lost.append(new)
        except BaseException as exc:
            errors.append(exc)
        else:
            with lock:
                won.append(result)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    return won, lost


def test_racing_creators_exactly_one_wins(index: ObjectIndex) -> None:
    index.create_bucket("models")
    for round_ in range(ROUNDS):
        key = f"race/{round_}.pt"
        if round_ % 2:  # odd rounds race over a key in the trash: absent too
            index.commit_version(new_version("models", key, b"before"))
            index.delete_key("models", key)
        won, lost = _race(
            index, lambda n, key=key: _when(new_version("models", key, b"%d" % n), CREATE)
        )
        assert len(won) == 1 and len(lost) == THREADS - 1, (round_, len(won))
        latest = index.resolve_latest("models", key)
        assert latest.file_id == won[0].version.file_id
        assert len(index.list_versions("models", key)) == 1 + round_ % 2
        # No loser left a blob row behind: GC owes their bytes nothing but removal.
        assert not index.known_blob_ids(n.blob_id for n in lost)


def test_racing_compare_and_swap_exactly_one_wins(index: ObjectIndex) -> None:
    index.create_bucket("models")
    current = index.commit_version(new_version("models", "cas.pt", b"start")).version
    for round_ in range(ROUNDS):
        expected = _match(current.etag)
        won, lost = _race(
            index,
            lambda n, r=round_, c=expected: _when(
                new_version("models", "cas.pt", b"%d-%d" % (r, n)), c
            ),
        )
        assert len(won) == 1 and len(lost) == THREADS - 1
        current = index.resolve_latest("models", "cas.pt")
        assert current.file_id == won[0].version.file_id
        assert not index.known_blob_ids(n.blob_id for n in lost)
    assert len(index.list_versions("models", "cas.pt")) == ROUNDS + 1
