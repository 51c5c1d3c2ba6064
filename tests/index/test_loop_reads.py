"""One-statement reads on an event loop's thread keep one pooled connection
(index/transactions.py, _LoopReaders) instead of checking one out per read: no
checkout per read, each read still sees every commit made before it (by another
engine too, as another process would), worker threads keep nothing, and shutdown
gives the connection back."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import pytest
from sqlalchemy import Engine, event

from tfstorage.index import ObjectIndex, create_index_engine, migrate

from .builders import new_version

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    migrate(engine)
    ObjectIndex(engine).create_bucket("b")
    yield engine
    engine.dispose()


async def test_loop_reads_keep_one_connection_and_see_every_commit(
    engine: Engine, tmp_path: Path
) -> None:
    index = ObjectIndex(engine)
    first = index.commit_version(new_version("b", "k", b"one")).version
    checkouts = 0

    def counted(*_: object) -> None:
        nonlocal checkouts
        checkouts += 1

    event.listen(engine, "checkout", counted)
    assert index.resolve_latest("b", "k") == first
    assert checkouts == 1
    # Newer versions committed on other connections (the commits of this process to
    # one file share a committer, whichever engine asks).
    other = create_index_engine(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        for n in range(3):
            newer = ObjectIndex(other).commit_version(new_version("b", "k", b"%d" % n)).version
            before = checkouts  # (this process's commits to that file share one committer)
            assert index.resolve_latest("b", "k") == newer  # seen at once
            assert checkouts == before  # the loop's reads kept their connection
    finally:
        other.dispose()
    pool = engine.pool  # dispose replaces the engine's pool
    assert pool.checkedout() == 1
    index.dispose()
    assert pool.checkedout() == 0  # given back at shutdown


async def test_worker_threads_keep_no_connection(engine: Engine) -> None:
    index = ObjectIndex(engine)
    index.commit_version(new_version("b", "k"))
    kept = engine.pool.checkedout()  # the group committer keeps its own (group_commit.py)
    for _ in range(20):
        await anyio.to_thread.run_sync(index.resolve_latest, "b", "k")
    assert engine.pool.checkedout() == kept
    index.resolve_latest("b", "k")  # on the loop
    assert engine.pool.checkedout() == kept + 1
    index.dispose()


def test_a_loop_thread_that_ends_gives_its_connection_back(engine: Engine) -> None:
    index = ObjectIndex(engine)
    index.commit_version(new_version("b", "k"))
    kept = engine.pool.checkedout()  # the group committer keeps its own (group_commit.py)

    async def read() -> None:
        index.resolve_latest("b", "k")

    for _ in range(40):  # more loops in threads of their own than the pool has connections
        thread = threading.Thread(target=asyncio.run, args=(read(),))
        thread.start()
        thread.join()
    gc.collect()
    assert engine.pool.checkedout() == kept
