"""The usage counters agree with a recomputation from scratch after any sequence of writes.

A Hypothesis state machine drives every kind of index write (commits, deduplicated
bodies, unversioned overwrites, batch commits, copies, soft deletes, restores, version
deletes, metadata/content-type updates, lifecycle expiries, trash purges, garbage
collection, bucket deletes) on SQLite and PostgreSQL; after each step the counters must
equal the recomputation, and the figures the service reads (index stats, quotas) must be
the ones a dict model of the store predicts.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from tests.index.builders import new_version
from tfstorage.domain.lifecycle import Expiry
from tfstorage.errors import StorageError
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.batch import BatchIndex, CopyItem
from tfstorage.index.lifecycle import AuditFields, LifecycleIndex
from tfstorage.index.tables import usage_counters, usage_owners
from tfstorage.index.usage import UsageIndex

pytestmark = pytest.mark.timeout(120)

KEYS = ("a", "b.csv", "ckpt/model.safetensors", "data/part.parquet")
BODIES = (b"", b"x", b"hello", b"0123456789")  # shared: commits often deduplicate
TYPES = ("application/octet-stream", "text/csv", "image/png")
AUDIT = AuditFields(actor="test", token_id=None, request_id=None, detail={})
FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


class CounterMachine(RuleBasedStateMachine):
    index: ObjectIndex

    def __init__(self) -> None:
        super().__init__()
        run = uuid.uuid4().hex[:8]
        # Two versioned buckets (one with a quota), one unversioned.
        self.buckets = {f"v-{run}": True, f"q-{run}": True, f"u-{run}": False}
        for name, versioning in self.buckets.items():
            quota = 40 if name.startswith("q-") else None
            self.index.create_bucket(name, versioning=versioning, quota_bytes=quota)
        self.batch = BatchIndex(self.index.engine)
        self.lifecycle = LifecycleIndex(self.index.engine)
        self.usage = UsageIndex(self.index.engine)

    versions = Bundle("versions")

    def bucket(self, i: int) -> str:
        return list(self.buckets)[i]

    @rule(
        target=versions,
        b=st.integers(0, 2),
        key=st.sampled_from(KEYS),
        body=st.sampled_from(BODIES),
        ctype=st.sampled_from(TYPES),
    )
    def commit(self, b: int, key: str, body: bytes, ctype: str) -> str:
        try:
            made = self.index.commit_version(
                new_version(self.bucket(b), key, body, content_type=ctype)
            )
        except StorageError:  # a quota refused it: nothing must have been counted
            return ""
        return made.version.file_id

    @rule(
        b=st.integers(0, 2),
        items=st.lists(
            st.tuples(st.sampled_from(KEYS), st.sampled_from(BODIES)), min_size=1, max_size=3
        ),
    )
    def commit_batch(self, b: int, items: list[tuple[str, bytes]]) -> None:
        # Distinct keys into the versioned bucket without a quota take the bulk path
        # (index/batch.py); the others go one by one.
        news = [new_version(self.bucket(b), key, body) for key, body in items]
        self.index.commit_versions_each(news)

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=2, max_size=4, unique=True),
        body=st.sampled_from(BODIES),
    )
    def commit_bulk(self, keys: list[str], body: bytes) -> None:
        # Always the bulk path: distinct keys, versioned bucket, no quota; one body
        # shared by the whole batch, often one already stored (dedup within and across).
        self.index.commit_versions_each([new_version(self.bucket(0), k, body) for k in keys])

    @rule(b=st.integers(0, 2), key=st.sampled_from(KEYS), body=st.sampled_from(BODIES))
    def complete_upload(self, b: int, key: str, body: bytes) -> None:
        # A multipart completion: the version and the session's end in one transaction.
        self._quietly(self.index.commit_versions, [new_version(self.bucket(b), key, body)])

    @rule(source=versions, b=st.integers(0, 2), key=st.sampled_from(KEYS), overwrite=st.booleans())
    def copy(self, source: str, b: int, key: str, overwrite: bool) -> None:
        found = self._version(source)
        if found is None:
            return
        item = CopyItem(found, self.bucket(b), key, overwrite, "copier")
        self.batch.copy_versions([item])

    @rule(b=st.integers(0, 2), key=st.sampled_from(KEYS))
    def soft_delete(self, b: int, key: str) -> None:
        self._quietly(self.index.delete_key, self.bucket(b), key)

    @rule(b=st.integers(1, 2), on=st.booleans())
    def set_versioning(self, b: int, on: bool) -> None:
        # Versions written while on stay when it is off: "null" versions beside them.
        self.index.update_bucket(self.bucket(b), versioning=on)

    @rule(b=st.integers(0, 2), key=st.sampled_from(KEYS))
    def delete_null_and_hide(self, b: int, key: str) -> None:
        self._quietly(self.index.delete_null_and_hide, self.bucket(b), key)

    @rule(b=st.integers(0, 2), key=st.sampled_from(KEYS))
    def restore_key(self, b: int, key: str) -> None:
        self._quietly(self.index.restore_key, self.bucket(b), key)

    @rule(source=versions)
    def restore_version(self, source: str) -> None:
        self._quietly(self.index.restore_version, source, "restorer")

    @rule(source=versions)
    def delete_version(self, source: str) -> None:
        self._quietly(self.index.delete_version, source)

    @rule(source=versions, ctype=st.sampled_from(TYPES))
    def retype(self, source: str, ctype: str) -> None:
        self._quietly(self.index.update_version, source, content_type=ctype)

    @rule(b=st.integers(0, 2), noncurrent=st.booleans())
    def lifecycle_expiry(self, b: int, noncurrent: bool) -> None:
        bucket = self.bucket(b)
        _, found = self.lifecycle.candidates(bucket)
        for c in found:
            if c.deleted or c.is_current == noncurrent:
                continue
            kind = "delete_version" if noncurrent else "expire"
            expiry = Expiry(kind, c.file_id, c.seq, c.key, c.size, "rule", "test")
            self.lifecycle.apply(bucket, expiry, protected_tags=(), audit=AUDIT)
            return

    @rule()
    def purge_trash(self) -> None:
        self.index.purge_deleted(FAR_FUTURE, limit=2)

    @rule()
    def collect_garbage(self) -> None:
        self.index.claim_unreferenced_blobs()

    @rule(b=st.integers(0, 2))
    def delete_bucket(self, b: int) -> None:
        name = self.bucket(b)
        self.index.delete_bucket(name, force=True)
        self.index.create_bucket(name, versioning=self.buckets[name])

    @invariant()
    def counters_agree(self) -> None:
        result = self.usage.check()
        assert result.differences == []

    @invariant()
    def stats_match_the_heads(self) -> None:
        stats = self.index.stats()
        for name in self.buckets:
            live = [v for k in KEYS if (v := self._latest(name, k)) is not None]
            assert stats.buckets[name].objects == len(live)
            assert stats.buckets[name].bytes == sum(v.size for v in live)

    def _latest(self, bucket: str, key: str) -> Any:
        try:
            return self.index.resolve_latest(bucket, key)
        except StorageError:
            return None

    def _version(self, file_id: str) -> Any:
        if not file_id:
            return None
        try:
            return self.index.get_version(file_id)
        except StorageError:
            return None

    @staticmethod
    def _quietly(call: Any, *args: Any, **kwargs: Any) -> None:
        # Refused (absent, locked, over quota): then it must have counted nothing.
        with contextlib.suppress(StorageError):
            call(*args, **kwargs)


def test_counters_agree_after_random_writes(index: ObjectIndex) -> None:
    machine = type("Machine", (CounterMachine,), {"index": index})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


def test_repair_rebuilds_damaged_counters(index: ObjectIndex) -> None:
    index.create_bucket("models")
    index.commit_version(new_version("models", "a.bin", b"abc"))
    index.commit_version(new_version("models", "a.bin", b"abcdef"))
    usage = UsageIndex(index.engine)
    assert usage.check().ok
    with index.engine.begin() as conn:
        conn.execute(usage_counters.update().values(objects=usage_counters.c.objects + 5))
    broken = usage.check()
    assert not broken.ok and broken.differences[0]["bucket"] == "models"
    repaired = usage.repair()
    assert repaired.repaired and repaired.differences == broken.differences
    assert usage.check().ok
    assert index.stats().buckets["models"].objects == 1
    with index.engine.connect() as conn:  # compacted into one slot per (bucket, category)
        slots = conn.execute(select(usage_counters.c.slot).distinct()).scalars().all()
    assert slots == [0]
    with index.engine.begin() as conn:  # the per-owner figures are checked too
        conn.execute(usage_owners.update().values(bytes=usage_owners.c.bytes - 1))
    wrong = usage.check().differences
    assert [(d["bucket"], d["owner"], d["counted"]["bytes"]) for d in wrong] == [
        ("models", "tester", 8)
    ]
    usage.repair()
    assert usage.check().ok


def test_quota_reads_the_counters(index: ObjectIndex) -> None:
    index.create_bucket("small", quota_bytes=10, quota_objects=2)
    index.commit_version(new_version("small", "a", b"12345"))
    index.commit_version(new_version("small", "a", b"1234567890"))  # an overwrite fits
    with pytest.raises(StorageError) as refused:
        index.commit_version(new_version("small", "b", b"1"))
    assert refused.value.code == "QuotaExceeded"
    index.delete_key("small", "a")  # the trash does not count against the quota
    index.commit_version(new_version("small", "b", b"1234567890"))
    assert UsageIndex(index.engine).check().ok


def test_trashed_figures_count_every_version_of_a_deleted_key(index: ObjectIndex) -> None:
    index.create_bucket("models")
    for body in (b"1", b"22", b"333"):
        index.commit_version(new_version("models", "k", body))
    index.delete_key("models", "k")
    stats = index.stats().buckets["models"]
    assert (stats.objects, stats.versions, stats.version_bytes) == (0, 3, 6)
    index.restore_key("models", "k")
    assert index.stats().buckets["models"].bytes == 3


def test_revision_0011_fills_the_counters_of_an_existing_index(empty_url: str) -> None:
    engine = create_index_engine(empty_url)
    try:
        migrate(engine, "0009")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO buckets (id, name, created_at, versioning, description) "
                "VALUES (1, 'm', CURRENT_TIMESTAMP, true, '')"
            )
            conn.exec_driver_sql(
                "INSERT INTO blobs (blob_id, sha256, md5, size, refcount, created_at) VALUES "
                "('b1', 's1', 'm1', 10, 2, CURRENT_TIMESTAMP), "
                "('b2', 's2', 'm2', 7, 1, CURRENT_TIMESTAMP)"
            )
            # Inserted in seq order: a fresh database numbers them 1, 2, 3.
            rows = ((1, "k", "b1", 10), (2, "k", "b2", 7), (3, "gone", "b1", 10))
            for seq, key, blob, size in rows:
                conn.exec_driver_sql(
                    "INSERT INTO versions (file_id, bucket_id, key, blob_id, size, etag,"
                    " sha256, content_type, user_metadata, created_at, created_by, category)"
                    f" VALUES ('f{seq}', 1, '{key}', '{blob}', {size}, 'm', 's',"
                    " 'text/csv', '{}', CURRENT_TIMESTAMP, 'me', 'datasets')"
                )
            conn.exec_driver_sql(
                "INSERT INTO object_keys (bucket_id, key, current_id, deleted_at) VALUES "
                "(1, 'k', 2, NULL), (1, 'gone', 3, CURRENT_TIMESTAMP)"
            )
        migrate(engine)
        assert UsageIndex(engine).check().ok
        stats = ObjectIndex(engine).stats()
        m = stats.buckets["m"]
        assert (m.objects, m.bytes, m.versions, m.version_bytes) == (1, 7, 3, 27)
        assert (stats.blobs, stats.stored_bytes) == (2, 17)
        # And the triggers are in place: the next write is counted.
        ObjectIndex(engine).commit_version(new_version("m", "new", b"12345"))
        assert ObjectIndex(engine).stats().buckets["m"].bytes == 12
        assert UsageIndex(engine).check().ok
    finally:
        engine.dispose()
