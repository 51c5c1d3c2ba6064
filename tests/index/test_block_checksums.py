"""Block checksums in the index (revision 0008), on SQLite and PostgreSQL: recorded with
a new blob, kept by dedup, filled in for old blobs only where none are set."""

from __future__ import annotations

import os
from dataclasses import replace

from tests.index.builders import new_version
from tfstorage.domain.blocks import block_checksums_of
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.integrity import IntegrityIndex

B = 4096


def test_new_blobs_keep_their_block_checksums_and_dedup_keeps_the_first(
    index: ObjectIndex,
) -> None:
    index.create_bucket("models")
    integrity = IntegrityIndex(index.engine)
    data = os.urandom(3 * B + 5)
    sums = block_checksums_of(data, B)
    first = index.commit_version(replace(new_version("models", "a", data), blocks=sums))
    assert integrity.block_checksums(first.version.blob_id) == sums
    assert integrity.stored_blob(first.version.blob_id).blocks == sums  # type: ignore[union-attr]

    # The same bytes again (another block size, say): the stored blob's checksums stay.
    other = block_checksums_of(data, 2 * B)
    again = index.commit_version(replace(new_version("models", "b", data), blocks=other))
    assert again.version.blob_id == first.version.blob_id
    assert integrity.block_checksums(first.version.blob_id) == sums

    # The batch path records them too; a blob without any reads as None.
    batch = [
        replace(new_version("models", "c", b"c" * B), blocks=block_checksums_of(b"c" * B, B)),
        new_version("models", "d", b"no blocks"),
    ]
    c, d = index.commit_versions_each(batch)
    assert not isinstance(c, Exception) and not isinstance(d, Exception)
    assert integrity.block_checksums(c.version.blob_id) == block_checksums_of(b"c" * B, B)
    assert integrity.block_checksums(d.version.blob_id) is None
    assert integrity.block_checksums("0" * 32) is None


def test_a_dedup_hit_fills_in_a_blob_recorded_without_block_checksums(
    index: ObjectIndex,
) -> None:
    index.create_bucket("models")
    integrity = IntegrityIndex(index.engine)
    data, other = os.urandom(2 * B + 1), os.urandom(B)
    old = index.commit_version(new_version("models", "old", data))  # as before 0008
    old_other = index.commit_version(new_version("models", "old2", other))
    sums = block_checksums_of(data, B)
    again = index.commit_version(replace(new_version("models", "again", data), blocks=sums))
    assert again.version.blob_id == old.version.blob_id
    assert integrity.block_checksums(old.version.blob_id) == sums
    # The batch path too.
    [batched] = index.commit_versions_each(
        [replace(new_version("models", "b", other), blocks=block_checksums_of(other, B))]
    )
    assert not isinstance(batched, Exception)
    assert batched.version.blob_id == old_other.version.blob_id
    assert integrity.block_checksums(old_other.version.blob_id) == block_checksums_of(other, B)


def test_filling_in_needs_the_sha256_and_never_overwrites(index: ObjectIndex) -> None:
    index.create_bucket("models")
    integrity = IntegrityIndex(index.engine)
    data = os.urandom(2 * B)
    new = new_version("models", "old", data)
    blob_id = index.commit_version(new).version.blob_id
    sums = block_checksums_of(data, B)
    assert not integrity.record_block_checksums(blob_id, "f" * 64, sums)  # other bytes
    assert integrity.block_checksums(blob_id) is None
    assert integrity.record_block_checksums(blob_id, new.sha256, sums)
    assert not integrity.record_block_checksums(
        blob_id, new.sha256, block_checksums_of(data, 2 * B)
    )
    assert integrity.block_checksums(blob_id) == sums


def test_revision_0008_adds_empty_columns_to_existing_blobs(empty_url: str) -> None:
    engine = create_index_engine(empty_url)
    try:
        migrate(engine, "0007")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO blobs (blob_id, sha256, md5, size, refcount, created_at) "
                f"VALUES ('{'b' * 32}', '{'s' * 64}', 'm1', 1, 1, CURRENT_TIMESTAMP)"
            )
        migrate(engine)
        integrity = IntegrityIndex(engine)
        assert integrity.block_checksums("b" * 32) is None
        stored = integrity.stored_blob("b" * 32)
        assert stored is not None and stored.blocks is None and stored.size == 1
        sums = block_checksums_of(b"x", B)
        assert integrity.record_block_checksums("b" * 32, "s" * 64, sums)
        assert integrity.block_checksums("b" * 32) == sums
    finally:
        engine.dispose()
