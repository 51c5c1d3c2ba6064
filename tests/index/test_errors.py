from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from tfstorage.domain.records import CommitResult, NewVersion
from tfstorage.errors import InternalError, ServiceUnavailable
from tfstorage.index import ObjectIndex, create_index_engine, migrate, writes

from .builders import new_version


def _failing_once(error: Exception, calls: list[int]) -> Any:
    real = writes.commit_version

    def commit(conn: Any, new: NewVersion) -> CommitResult:
        calls.append(1)
        if len(calls) == 1:
            real(conn, new)  # its work must be rolled back with the transaction
            raise error
        result: CommitResult = real(conn, new)
        return result

    return commit


def test_deadlocks_are_retried(index: ObjectIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    index.create_bucket("models")
    calls: list[int] = []
    deadlock = OperationalError("UPDATE ...", {}, psycopg.errors.DeadlockDetected("deadlock"))
    monkeypatch.setattr(writes, "commit_version", _failing_once(deadlock, calls))
    result = index.commit_version(new_version("models", "k"))
    assert len(calls) == 2
    assert [v.file_id for v in index.list_versions("models", "k")] == [result.version.file_id]
    assert result.duplicate_blob_id is None


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OperationalError("SELECT secret", {}, Exception("disk I/O error")), ServiceUnavailable),
        (IntegrityError("INSERT secret", {}, Exception("constraint")), InternalError),
    ],
)
def test_database_errors_become_storage_errors(
    index: ObjectIndex,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    expected: type[Exception],
) -> None:
    index.create_bucket("models")
    calls: list[int] = []
    monkeypatch.setattr(writes, "commit_version", _failing_once(error, calls))
    with pytest.raises(expected) as caught:
        index.commit_version(new_version("models", "k"))
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is error
    assert len(calls) == 1
    assert index.stats().logical_bytes == 0


def test_unreachable_postgres_is_unavailable() -> None:
    index = ObjectIndex(create_index_engine("postgresql://postgres@127.0.0.1:1/none"))
    with pytest.raises(ServiceUnavailable):
        index.ping()
    index.engine.dispose()


def test_a_write_inside_a_write_is_refused_not_deadlocked(tmp_path: Path) -> None:
    # SQLite's group committer only: PostgreSQL commits each transaction itself.
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    index = ObjectIndex(engine)
    with pytest.raises(RuntimeError, match="inside another"):
        index._write(lambda conn: index.ensure_bucket("inner"))
    assert index.ensure_bucket("after").name == "after"  # the committer still works
    engine.dispose()
