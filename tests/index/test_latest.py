"""The one-statement latest-version read of GET and HEAD (index/latest.py): the same
answers as before, a version whole or not at all while a writer is mid-transaction,
and another instance's commit seen at once (nothing of a version is cached)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event, select

from tfstorage.domain.records import ObjectVersion
from tfstorage.errors import NoSuchBucket, NoSuchKey
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.engine import WRITE_OPTION
from tfstorage.index.integrity import IntegrityIndex
from tfstorage.index.latest import read_latest, read_latest_on_driver
from tfstorage.index.tables import tags
from tfstorage.index.writes import commit_version

from .builders import new_version

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def models(index: ObjectIndex) -> ObjectIndex:
    index.create_bucket("models")
    return index


def test_latest_with_every_tag(models: ObjectIndex) -> None:
    models.commit_version(new_version("models", "a.pt", b"old", tags={"stage": "dev"}))
    new = new_version("models", "a.pt", b"new", tags={"stage": "prod", "team": "vision"})
    committed = models.commit_version(new).version
    latest = models.resolve_latest("models", "a.pt")
    assert latest == committed
    assert latest.tags == {"stage": "prod", "team": "vision"} and latest.is_latest


def test_untagged_version(models: ObjectIndex) -> None:
    committed = models.commit_version(new_version("models", "plain.bin", b"x")).version
    assert models.resolve_latest("models", "plain.bin") == committed
    assert committed.tags == {}


def test_absent_bucket_key_and_trashed_key(models: ObjectIndex) -> None:
    with pytest.raises(NoSuchBucket):
        models.resolve_latest("nope", "a.pt")
    with pytest.raises(NoSuchKey):
        models.resolve_latest("models", "a.pt")
    models.commit_version(new_version("models", "a.pt"))
    models.create_bucket("other")
    with pytest.raises(NoSuchKey):  # the same key in another bucket names nothing here
        models.resolve_latest("other", "a.pt")
    models.delete_key("models", "a.pt")
    with pytest.raises(NoSuchKey):
        models.resolve_latest("models", "a.pt")


def test_no_transaction_round_trips(models: ObjectIndex) -> None:
    models.commit_version(new_version("models", "a.pt"))
    sent: list[str] = []
    engine = models.engine
    if engine.dialect.name == "sqlite":
        # Read on the driver's connection: what SQLite itself is sent, on connections
        # made from now on (after the PRAGMAs each one starts with).
        engine.dispose()

        @event.listens_for(engine, "connect")
        def _trace(driver: sqlite3.Connection, _record: object) -> None:
            driver.set_trace_callback(lambda statement: sent.append(statement))

        models.resolve_latest("models", "a.pt")
        event.remove(engine, "connect", _trace)
        sent = [s for s in sent if not s.upper().startswith("PRAGMA")]
    else:
        listen = event.listens_for(engine, "before_cursor_execute")

        @listen
        def _record(conn: object, cursor: object, statement: str, *args: object) -> None:
            sent.append(statement)

        try:
            models.resolve_latest("models", "a.pt")
        finally:
            event.remove(engine, "before_cursor_execute", _record)
    assert len(sent) == 1 and sent[0].lstrip().upper().startswith("SELECT"), sent


def test_sqlite_driver_read_answers_as_sqlalchemy_does(tmp_path: Path) -> None:
    """The driver read converts each column as SQLAlchemy would: every field of every
    kind of version the same as read_latest's, and the same errors."""
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    index = ObjectIndex(engine)
    index.create_bucket("models")
    nested = {"epoch": 3, "loss": 0.25, "labels": ["chat", "ünïcode"], "cfg": {"lr": None}}
    index.commit_version(new_version("models", "plain", b"x"))
    index.commit_version(
        replace(
            new_version("models", "rich", b"yy", metadata=nested, tags={"a": "1", "b": "2"}),
            content_headers={"Cache-Control": "no-cache", "Content-Disposition": "inline"},
        )
    )
    damaged = index.commit_version(new_version("models", "damaged", b"zzz")).version
    assert IntegrityIndex(engine).mark_damaged(damaged.blob_id, "corrupt")
    index.commit_version(new_version("models", "trashed", b"t"))
    index.delete_key("models", "trashed")

    def both(bucket: str, key: str) -> tuple[object, object]:
        answers = []
        with engine.connect() as conn:
            answers.append(_answer(lambda: read_latest(conn, bucket, key)))
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            answers.append(
                _answer(lambda: read_latest_on_driver(driver, engine.dialect, bucket, key))  # type: ignore[arg-type]
            )
        return answers[0], answers[1]

    # What a commit answers with is read on the driver too (read_version).
    again = index.commit_version(
        replace(new_version("models", "again", b"a", tags={"t": "v"}), metadata=nested)
    ).version
    with engine.connect() as conn:
        assert read_latest(conn, "models", "again") == again
    for key in ("plain", "rich", "damaged", "trashed", "absent"):
        sqlalchemy_answer, driver_answer = both("models", key)
        assert driver_answer == sqlalchemy_answer, key
    assert both("nope", "plain")[1] == both("nope", "plain")[0] == NoSuchBucket
    rich = index.resolve_latest("models", "rich")
    assert rich.metadata == nested and rich.tags == {"a": "1", "b": "2"}
    assert rich.created_at.tzinfo is not None
    assert index.resolve_latest("models", "damaged").damage == "corrupt"


def _answer(read: Callable[[], ObjectVersion]) -> object:
    try:
        return read()
    except (NoSuchBucket, NoSuchKey) as exc:
        return type(exc)


def test_a_version_whole_or_not_at_all_during_a_write(models: ObjectIndex) -> None:
    first = models.commit_version(new_version("models", "a.pt", b"1", tags={"n": "1"})).version
    with models.engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            new = new_version("models", "a.pt", b"2", tags={"n": "2", "extra": "y"})
            pending = commit_version(conn, new).version
            # Uncommitted: a reader sees the previous version, tags included.
            assert models.resolve_latest("models", "a.pt") == first
            assert conn.execute(select(tags.c.key).where(tags.c.version_id == pending.seq)).all()
    assert models.resolve_latest("models", "a.pt") == pending


def test_another_instance_sees_a_commit_at_once(models: ObjectIndex) -> None:
    other = ObjectIndex(create_index_engine(models.engine.url.render_as_string(False)))
    try:
        models.commit_version(new_version("models", "a.pt", b"1"))
        assert other.resolve_latest("models", "a.pt").size == 1
        second = models.commit_version(new_version("models", "a.pt", b"22")).version
        assert other.resolve_latest("models", "a.pt") == second
        models.delete_key("models", "a.pt")
        with pytest.raises(NoSuchKey):
            other.resolve_latest("models", "a.pt")
    finally:
        other.dispose()
