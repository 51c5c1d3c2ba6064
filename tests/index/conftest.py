"""Backends for the index suite: every test taking `index` runs on SQLite and PostgreSQL.

PostgreSQL: TEST_POSTGRES_URL (default: postgres@127.0.0.1:5432, trust auth). One
database, tfs_test_<random>, is created for the session and dropped at its end; tests
get it truncated. Unreachable server: skip, or fail when CI is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tfstorage.index import ObjectIndex, create_index_engine, migrate

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_TABLES = "tags, object_keys, versions, blobs, buckets, usage_counters, usage_owners, usage_blobs"


def _admin_engine(url: str) -> Engine:
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    parsed = parsed.update_query_dict({"connect_timeout": "3"})
    return create_engine(parsed, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


class PostgresServer:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._admin = _admin_engine(url)
        self._created: list[str] = []

    def check(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    def create_database(self, options: str = "") -> str:
        """A new database (`options`: the rest of CREATE DATABASE, e.g. a locale)."""
        name = f"tfs_test_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" {options}'))
        self._created.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self._admin.connect() as conn:
            for name in self._created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get("TEST_POSTGRES_URL") or DEFAULT_PG
    server = PostgresServer(url)
    try:
        server.check()
    except Exception as exc:
        where = make_url(url).render_as_string(hide_password=True)
        reason = (
            f"PostgreSQL not reachable at {where} ({type(exc).__name__}); set TEST_POSTGRES_URL"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(reason)
    yield server
    server.drop_all()


@pytest.fixture(scope="session")
def postgres_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    engine = create_index_engine(postgres_server.create_database())
    migrate(engine)
    yield engine
    engine.dispose()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectIndex]:
    if request.param == "sqlite":
        engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
        migrate(engine)
        yield ObjectIndex(engine)
        engine.dispose()
        return
    engine = request.getfixturevalue("postgres_engine")
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY CASCADE"))
    yield ObjectIndex(engine)


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with no schema yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh' / 'index.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
