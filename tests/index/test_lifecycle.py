"""The index side of lifecycle, on SQLite and PostgreSQL: runners that overlap (no lease)
still expire each object once, and the lease admits one holder at a time."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable

from sqlalchemy import Engine, select, text

from tfstorage.domain.lifecycle import evaluate, parse_rules
from tfstorage.domain.records import NewVersion
from tfstorage.errors import ObjectLocked
from tfstorage.index import ObjectIndex
from tfstorage.index.lifecycle import AuditFields, LifecycleIndex
from tfstorage.index.tables import audit_log, versions


def commit(index: ObjectIndex, bucket: str, key: str) -> str:
    body = f"{key}-{uuid.uuid4().hex}".encode()
    new = NewVersion(
        bucket=bucket,
        key=key,
        blob_id=uuid.uuid4().hex,
        size=len(body),
        md5=hashlib.md5(body).hexdigest(),
        sha256=hashlib.sha256(body).hexdigest(),
        content_type="application/octet-stream",
    )
    return index.commit_version(new).version.file_id


def test_overlapping_runners_expire_each_object_once(index: ObjectIndex) -> None:
    index.create_bucket("ckpt")
    for epoch in range(10):
        for job in range(4):
            commit(index, "ckpt", f"job_{job}/epoch_{epoch}.ckpt")
    # Non-current versions, for the keep_versions rule.
    for _ in range(3):
        commit(index, "ckpt", "job_0/config.json")
    lifecycle = LifecycleIndex(index.engine)
    rules = parse_rules(
        [
            {"id": "last-2", "filter": {"key_pattern": "*/epoch_*"},
             "keep_last": {"count": 2, "group_depth": 1}},
            {"id": "one-version", "keep_versions": 1},
        ]
    )  # fmt: skip
    now, candidates = lifecycle.candidates("ckpt")
    plan = evaluate(rules, candidates, now, retention_days=30, protected_tags=())
    assert len(plan) == 4 * 8 + 2
    run_id = uuid.uuid4().hex
    audit = AuditFields("lifecycle", None, None, {"run_id": run_id})
    done: list[str] = []
    errors: list[BaseException] = []

    def runner(seed: int) -> None:
        order = list(plan)
        random.Random(seed).shuffle(order)
        try:
            for expiry in order:
                if lifecycle.apply("ckpt", expiry, protected_tags=(), audit=audit):
                    done.append(expiry.file_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(done) == sorted(e.file_id for e in plan)  # each once, by one runner
    with index.engine.connect() as conn:
        logged = conn.execute(
            select(audit_log.c.file_id).where(audit_log.c.file_id.in_([e.file_id for e in plan]))
        ).scalars()
        assert sorted(logged) == sorted(done)
    left = index.list_objects("ckpt").objects
    assert len(left) == 4 * 2 + 1
    assert len(index.list_versions("ckpt", "job_0/config.json")) == 1
    # The stale plan, run again, does nothing.
    assert not any(lifecycle.apply("ckpt", e, protected_tags=(), audit=audit) for e in plan)


def test_the_lease_admits_one_holder(index: ObjectIndex) -> None:
    lifecycle = LifecycleIndex(index.engine)
    name = f"lease-{uuid.uuid4().hex[:8]}"
    assert lifecycle.acquire_lease(name, "a", 60)
    assert not lifecycle.acquire_lease(name, "b", 60)
    assert lifecycle.acquire_lease(name, "a", 60)  # renewal
    lifecycle.release_lease(name, "b")  # not b's to release
    assert not lifecycle.acquire_lease(name, "b", 60)
    lifecycle.release_lease(name, "a")
    assert lifecycle.acquire_lease(name, "b", 60)
    # A lapsed lease (its holder crashed) is taken over.
    assert lifecycle.acquire_lease(name, "b", 0)
    assert lifecycle.acquire_lease(name, "c", 60)


def test_a_hold_landing_during_a_forced_bucket_delete_stops_it(postgres_engine: Engine) -> None:
    # PostgreSQL (SQLite lets one writer in at a time): the delete checked for locks
    # before the hold committed; it must not then delete the held version anyway.
    index = ObjectIndex(postgres_engine)
    lifecycle = LifecycleIndex(postgres_engine)
    bucket = f"race-{uuid.uuid4().hex[:8]}"
    index.create_bucket(bucket)
    file_id = commit(index, bucket, "model.pt")
    errors: dict[str, BaseException] = {}

    def attempt(name: str, call: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                call()
            except BaseException as exc:
                errors[name] = exc

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def waiting_for_locks(n: int) -> None:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        with postgres_engine.connect() as conn:
            for _ in range(1000):
                if conn.execute(query).scalar_one() >= n:
                    return
                time.sleep(0.01)
        raise AssertionError(f"never saw {n} transactions waiting for a lock")

    with postgres_engine.connect() as blocker, blocker.begin():
        # Holding the version row: the hold waits here, after its first locks.
        blocker.execute(
            select(versions.c.id).where(versions.c.file_id == file_id).with_for_update()
        )
        hold = attempt(
            "hold",
            lambda: lifecycle.set_retention(file_id, retain_until=None, legal_hold=True),
        )
        waiting_for_locks(1)
        purge = attempt("delete", lambda: index.delete_bucket(bucket, force=True))
        waiting_for_locks(2)
    hold.join()
    purge.join()
    assert "hold" not in errors, errors
    assert isinstance(errors.get("delete"), ObjectLocked), errors
    assert lifecycle.get_retention(file_id).legal_hold is True
