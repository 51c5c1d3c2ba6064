"""Storage statistics over a large generated index, on SQLite and PostgreSQL.

The index is generated in place (tests/index/bulk.py) once per session and backend; the
expected figures are computed in Python from the same recipe, in a thread while the
database loads. The suite checks the figures at 100,000 keys (`TFS_SCALE_KEYS` sets
another count, e.g. 1000000): correctness does not need a million rows, and generating
them cost the suite about three minutes. The million-object timings live in
`bench/stats.py`, which builds the same recipe and measures against the machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import select

from tests.index.bulk import BUCKETS, Expected, Recipe
from tests.index.conftest import BACKENDS, PostgresServer
from tfstorage.api.app import create_app
from tfstorage.config import Settings
from tfstorage.domain.categories import key_category
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.tables import versions

_KEYS = int(os.environ.get("TFS_SCALE_KEYS", "100000"))
# Five keys share each first-version blob (dedup), as in the million-key recipe.
RECIPE = Recipe(keys=_KEYS, blob_period=max(1, _KEYS // 5))
ADMIN_TOKEN = "tfs_scale-test-admin"
HISTORY = "/api/v1/storage/stats/history?days=1"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def expected_figures() -> Iterator[Future[Expected]]:
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(RECIPE.expected)


@pytest.fixture(scope="session", params=BACKENDS)
def large_index(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    expected_figures: Future[Expected],
) -> Iterator[str]:
    """The URL of an index holding RECIPE's keys (1.1 versions per key, dedup across keys)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'index.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    engine = create_index_engine(url)
    migrate(engine)
    seconds = RECIPE.fill(ObjectIndex(engine))
    print(f"\n[{request.param}] generated {RECIPE.keys:,} keys in {seconds:.1f} s")
    engine.dispose()
    yield url


@pytest.fixture
async def scale_client(large_index: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=large_index,
        gc_interval_seconds=0,
        admin_token=ADMIN_TOKEN,
        # The generated index is shared by the tests and has no blobs behind it: nothing
        # may expire, purge or scrub it.
        retention_days=3650,
        lifecycle_interval_seconds=0,
        scrub_interval_seconds=0,
    )  # type: ignore[call-arg]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=120,
        ) as client:
            # The start-up maintenance records today's snapshot (a full report): let it
            # finish first, so that the request measured below runs alone.
            deadline = time.monotonic() + 240
            while not (await client.get(HISTORY)).json()["history"]:
                assert time.monotonic() < deadline, "no daily snapshot after start-up"
                await anyio.sleep(0.2)
            yield client


def test_generated_rows_carry_the_write_paths_category(large_index: str) -> None:
    engine = create_index_engine(large_index)
    try:
        with engine.connect() as conn:
            sample = conn.execute(
                select(versions.c.key, versions.c.content_type, versions.c.category).where(
                    versions.c.id % 97 == 0
                )
            ).all()
    finally:
        engine.dispose()
    assert len(sample) > 1000
    assert [row.category for row in sample] == [
        key_category(row.key, row.content_type) for row in sample
    ]


@pytest.mark.anyio
async def test_stats_of_a_large_index_in_one_request(
    scale_client: httpx.AsyncClient, expected_figures: Future[Expected]
) -> None:
    start = time.perf_counter()
    response = await scale_client.get("/api/v1/storage/stats", params={"top": 10})
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    body = response.json()
    print(f"\n/api/v1/storage/stats over {RECIPE.keys:,} keys: {elapsed * 1000:.0f} ms")
    e = expected_figures.result()

    assert body["total_objects"] == sum(e.live.values())
    assert body["total_size_bytes"] == sum(e.live_bytes.values())
    for name in BUCKETS:
        assert body["buckets"][name]["size_bytes"] == e.live_bytes[name]
        b = body["bucket_usage"][name]
        assert (b["objects"], b["bytes"]) == (e.live[name], e.live_bytes[name])
        assert (b["versions"], b["version_bytes"]) == (e.versions[name], e.version_bytes[name])
        assert (b["trash_versions"], b["trash_bytes"]) == (e.trash[name], e.trash_bytes[name])
        noncurrent = e.version_bytes[name] - e.live_bytes[name] - e.trash_bytes[name]
        assert b["noncurrent_bytes"] == noncurrent
    assert body["trash"]["keys"] == RECIPE.keys // 50
    assert body["versions"]["versions"] == RECIPE.keys + RECIPE.extras
    assert {c: v["objects"] for c, v in body["categories"].items()} == {
        c: e.categories[c] for c in ("datasets", "models", "checkpoints", "other")
    }
    assert {c: v["bytes"] for c, v in body["categories"].items()} == {
        c: e.category_bytes[c] for c in ("datasets", "models", "checkpoints", "other")
    }
    assert {o: v["versions"] for o, v in body["owners"].items()} == dict(e.owners)
    assert {o: v["bytes"] for o, v in body["owners"].items()} == dict(e.owner_bytes)
    assert [(o["size"], o["key"]) for o in body["largest"]] == e.largest
    dedup = body["dedup"]
    assert dedup["blobs"] == e.blobs
    assert dedup["stored_bytes"] == e.stored_bytes
    assert dedup["logical_bytes"] == sum(e.version_bytes.values())
    assert dedup["saved_bytes"] == sum(e.version_bytes.values()) - e.stored_bytes > 0


@pytest.mark.anyio
async def test_one_bucket_of_a_large_index(
    scale_client: httpx.AsyncClient, expected_figures: Future[Expected]
) -> None:
    e = expected_figures.result()
    start = time.perf_counter()
    response = await scale_client.get("/api/v1/storage/stats", params={"bucket": "ckpt-scale"})
    elapsed = time.perf_counter() - start
    print(f"\n/api/v1/storage/stats?bucket=ckpt-scale: {elapsed * 1000:.0f} ms")
    body = response.json()
    assert list(body["buckets"]) == ["ckpt-scale"]
    assert body["total_objects"] == e.live["ckpt-scale"]
    assert body["trash"]["versions"] == e.trash["ckpt-scale"]
    # A bucket named like checkpoints holds no models: its weights are checkpoints.
    assert body["categories"]["models"]["objects"] == 0
    assert all(o["bucket"] == "ckpt-scale" for o in body["largest"])


@pytest.mark.anyio
async def test_daily_snapshot_of_a_large_index(
    scale_client: httpx.AsyncClient, expected_figures: Future[Expected]
) -> None:
    e = expected_figures.result()
    (today,) = (await scale_client.get(HISTORY)).json()["history"]
    assert today["objects"] == sum(e.live.values())
    assert today["version_bytes"] == sum(e.version_bytes.values())
    assert today["trash_bytes"] == sum(e.trash_bytes.values())
    assert today["stored_bytes"] == e.stored_bytes
    assert today["buckets"]["scale-b"]["bytes"] == e.live_bytes["scale-b"]
