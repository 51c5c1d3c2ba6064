"""Issue 6, must-show 3: the scrub walks every blob the index knows, finds corrupt,
truncated and missing ones and orphans, keeps its place across restarts, reads at a
bounded rate, and runs on one instance at a time (on local disk and on S3)."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.api.blob_damage import StoredBlobs
from tests.api.conftest import ADMIN, assert_error, make_settings
from tests.s3.fixtures import s3_settings_overrides
from tests.server import conftest as server_fixtures
from tfstorage.api.app import create_app
from tfstorage.blobs.base import new_blob_id
from tfstorage.config import Settings
from tfstorage.index.reads import utcnow
from tfstorage.service.scrub import RateLimiter
from tfstorage.service.storage import Storage

pytestmark = pytest.mark.anyio
postgres_database = server_fixtures.postgres_database  # a fresh PostgreSQL database


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """As the suite's, but any blob unknown to the index counts as an orphan at once."""
    extra = {"orphan_grace_seconds": 0, "scrub_bytes_per_second": 0}
    if request.param == "local":
        return make_settings(tmp_path, **extra)
    seaweed = request.getfixturevalue("seaweedfs")
    prefix = request.getfixturevalue("s3_prefix")
    overrides = s3_settings_overrides(seaweed, seaweed.bucket, prefix=prefix)
    return make_settings(tmp_path, **overrides, **extra)


def storage_of(app: FastAPI) -> Storage:
    storage: Storage = app.state.storage
    return storage


async def upload(app: FastAPI, c: httpx.AsyncClient, key: str, data: bytes) -> tuple[str, str]:
    """(file_id, blob_id) of a new object in `models`."""
    # With no orphan grace, the start-up GC's sweep would take a blob written while it
    # lists the store (stored, not yet committed) for an orphan: let it end first.
    with anyio.fail_after(60):
        await storage_of(app).started_up.wait()
    r = await c.put(f"/api/v1/objects/models/{key}", content=data)
    assert r.status_code == 200, r.text
    file_id: str = r.json()["file_id"]
    return file_id, storage_of(app).ctx.index.get_version(file_id).blob_id


async def scrub(c: httpx.AsyncClient, **params: object) -> dict[str, object]:
    r = await c.post("/api/v1/scrub/run", params={"wait": "true", **params})
    assert r.status_code == 200, r.text
    report: dict[str, object] = r.json()
    return report


async def test_a_pass_finds_corrupt_truncated_missing_and_orphan_blobs(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    stored = StoredBlobs(settings)
    blobs = {name: os.urandom(100_000 + i) for i, name in enumerate("abcde")}
    ids = {name: await upload(app, client, f"{name}.bin", data) for name, data in blobs.items()}
    stored.flip(ids["c"][1], 99)
    stored.truncate(ids["d"][1], 10)
    stored.delete(ids["e"][1])
    orphan = new_blob_id()
    stored.write(orphan, b"bytes nobody recorded")

    report = await scrub(client)
    assert report["finished"] is True and report["cursor"] is None
    assert (report["verified"], report["ok"]) == (5, 2)
    assert (report["corrupt"], report["truncated"], report["missing"]) == (1, 1, 1)
    assert report["found"] == {
        "corrupt": [ids["c"][1]],
        "truncated": [ids["d"][1]],
        "missing": [ids["e"][1]],
    }
    # Bytes read: two good blobs and the corrupt one whole, 10 of the truncated one.
    assert report["bytes"] == len(blobs["a"]) + len(blobs["b"]) + len(blobs["c"]) + 10
    assert report["orphans"] == 1 and report["orphan_blob_ids"] == [orphan]
    assert stored.exists(orphan)  # reported, not deleted: that is garbage collection's job

    status = (await client.get("/api/v1/scrub")).json()
    assert status["in_progress"] is None and status["last_report"]["verified"] == 5
    assert status["damaged"]["counts"] == {"corrupt": 1, "truncated": 1, "missing": 1}
    marked = {b["blob_id"]: b for b in status["damaged"]["blobs"]}
    assert set(marked) == {ids[n][1] for n in "cde"}
    assert marked[ids["c"][1]]["versions"] == [
        {"file_id": ids["c"][0], "bucket": "models", "key": "c.bin"}
    ]
    for name in "cde":
        assert_error(
            await client.get(f"/api/v1/download/models/{name}.bin"), 500, "ObjectCorrupted"
        )
    assert (await client.get("/api/v1/download/models/a.bin")).content == blobs["a"]

    health = (await client.get("/api/v1/health/detailed")).json()
    assert health["status"] == "degraded"
    assert health["checks"]["integrity"]["damaged_blobs"] == 3
    assert health["checks"]["integrity"]["last_scrub"] == report["finished_at"]
    values = {
        (s.name, s.labels.get("damage", "")): s.value
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
        for s in family.samples
    }
    assert values[("storage_integrity_blobs_verified_total", "")] == 5
    assert values[("storage_scrub_passes_total", "")] == 1
    assert values[("storage_integrity_damaged_blobs", "missing")] == 1
    # The index's checksums stayed the truth.
    info = (await client.get(f"/api/v1/files/{ids['c'][0]}")).json()
    assert info["sha256"] == hashlib.sha256(blobs["c"]).hexdigest()

    # A second pass finds the same, and nothing clears a mark but good bytes.
    again = await scrub(client)
    assert (again["corrupt"], again["truncated"], again["missing"]) == (1, 1, 1)


async def test_a_pass_resumes_from_its_cursor_in_a_new_instance(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    ids = sorted(
        [(await upload(app, client, f"{i}.bin", os.urandom(1000 + i)))[1] for i in range(5)]
    )
    first = await scrub(client, limit=2)
    assert first["finished"] is False and first["verified"] == 2 and first["cursor"] == ids[1]
    status = (await client.get("/api/v1/scrub")).json()
    assert status["in_progress"]["cursor"] == ids[1] and status["last_report"] is None

    # A new app on the same index goes on from the cursor: each blob once per pass.
    other = create_app(settings)
    async with other.router.lifespan_context(other):
        transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c2:
            assert (await c2.get("/api/v1/scrub")).json()["in_progress"]["cursor"] == ids[1]
            second = await scrub(c2, limit=2)
            assert (second["verified"], second["cursor"]) == (4, ids[3])
            assert second["started_at"] == first["started_at"]  # the same pass
            last = await scrub(c2)
            assert last["finished"] is True and (last["verified"], last["ok"]) == (5, 5)
    # The next pass starts from the beginning.
    fresh = await scrub(client, limit=1)
    assert (fresh["verified"], fresh["cursor"]) == (1, ids[0])
    assert fresh["started_at"] != first["started_at"]


async def test_the_rate_limit_holds_a_pass_to_its_bytes_per_second(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    sizes = [200_000, 150_000, 250_000]
    for i, size in enumerate(sizes):
        await upload(app, client, f"r{i}.bin", os.urandom(size))
    rate = 100_000
    storage = storage_of(app)
    storage.ctx.settings.scrub_bytes_per_second = rate
    clock = FakeClock()
    scrubber = storage.scrubber
    scrubber.limiter_factory = lambda r: RateLimiter(r, clock=clock.now, sleep=clock.sleep)

    report = await scrub(client)
    assert report["bytes"] == sum(sizes)
    assert scrubber.last_limiter is not None and scrubber.last_limiter.consumed == sum(sizes)
    # The pass may read one second's worth at once; every byte after that waits its turn.
    assert clock.slept == pytest.approx((sum(sizes) - rate) / rate)


class FakeClock:
    """Time that passes only when the limiter sleeps."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


async def test_rate_limiter_counts_bytes_not_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000, clock=clock.now, sleep=clock.sleep)
    await limiter.consume(1000)  # the burst
    assert clock.slept == 0
    for _ in range(10):
        await limiter.consume(500)
    assert clock.slept == pytest.approx(5.0)
    unlimited = RateLimiter(0, clock=clock.now, sleep=clock.sleep)
    await unlimited.consume(10**9)
    assert clock.slept == pytest.approx(5.0)


async def test_one_scrubber_at_a_time(client: httpx.AsyncClient, app: FastAPI) -> None:
    await upload(app, client, "x.bin", b"x" * 100)
    integrity = storage_of(app).ctx.integrity
    assert integrity.acquire_scrub_lease("another-instance", utcnow() + timedelta(minutes=1))
    assert_error(
        await client.post("/api/v1/scrub/run", params={"wait": "true"}), 409, "ScrubInProgress"
    )
    assert (await client.get("/api/v1/scrub")).json()["running"] is True
    integrity.release_scrub_lease("another-instance")
    assert (await scrub(client))["verified"] == 1
    # An expired lease is taken over.
    assert integrity.acquire_scrub_lease("dead-instance", utcnow() - timedelta(seconds=1))
    assert (await scrub(client))["verified"] == 1


async def test_scrub_in_the_background_and_the_schedule(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await upload(app, client, "bg.bin", b"b" * 1000)
    scrubber = storage_of(app).scrubber
    assert await scrubber.due()  # never scrubbed
    r = await client.post("/api/v1/scrub/run")
    assert r.status_code == 202 and r.json()["started"] is True
    assert scrubber._background is not None
    await scrubber._background
    status = (await client.get("/api/v1/scrub")).json()
    assert status["last_report"]["verified"] == 1
    assert not await scrubber.due()  # finished within the interval
    await scrub(client, limit=1)  # a pass under way (not finished) is due at once
    assert await scrubber.due()


async def test_two_instances_on_postgresql_scrub_one_at_a_time(
    tmp_path: Path, postgres_database: str
) -> None:
    settings = make_settings(tmp_path, database_url=postgres_database, scrub_bytes_per_second=1000)
    first, second = create_app(settings), create_app(settings)
    entered, go_on = anyio.Event(), anyio.Event()

    async def held(seconds: float) -> None:
        entered.set()
        await go_on.wait()

    async with (
        first.router.lifespan_context(first),
        second.router.lifespan_context(second),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=first), base_url="http://a", headers=ADMIN
        ) as a,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=second), base_url="http://b", headers=ADMIN
        ) as b,
    ):
        for i in range(3):
            await upload(first, a, f"p{i}.bin", os.urandom(2000))
        clock = FakeClock()
        storage_of(first).scrubber.limiter_factory = lambda r: RateLimiter(
            r, clock=clock.now, sleep=held
        )
        reports: list[dict[str, object]] = []

        async def scrub_on_first() -> None:
            reports.append(await scrub(a))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(scrub_on_first)
            await entered.wait()  # the first instance is mid-pass, holding the lease
            busy = await b.post("/api/v1/scrub/run", params={"wait": "true"})
            assert_error(busy, 409, "ScrubInProgress")
            status = (await b.get("/api/v1/scrub")).json()
            assert status["running"] is True and status["in_progress"]["verified"] == 0
            go_on.set()
        [done] = reports
        assert done["finished"] is True and done["verified"] == 3
        # The lease is free again; the second instance sees the same report, and scrubs.
        assert (await b.get("/api/v1/scrub")).json()["last_report"] == done
        assert (await scrub(b))["verified"] == 3


async def test_the_schedule_runs_passes_by_itself(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, scrub_interval_seconds=0.05)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers=ADMIN
        ) as c,
    ):
        await upload(app, c, "s.bin", b"scheduled")
        with anyio.fail_after(20):  # a bound on waiting, not a measurement
            while not ((await c.get("/api/v1/scrub")).json()["last_report"] or {}).get("ok"):
                await anyio.sleep(0.05)


async def test_shutdown_mid_pass_releases_the_lease_and_keeps_the_place(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, scrub_bytes_per_second=1000)
    app = create_app(settings)
    entered = anyio.Event()

    async def stuck(seconds: float) -> None:
        entered.set()
        await anyio.sleep_forever()

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers=ADMIN
        ) as c,
    ):
        ids = sorted([(await upload(app, c, f"{i}.bin", os.urandom(600)))[1] for i in range(3)])
        clock = FakeClock()
        storage_of(app).scrubber.limiter_factory = lambda r: RateLimiter(
            r, clock=clock.now, sleep=stuck
        )
        assert (await c.post("/api/v1/scrub/run")).status_code == 202
        with anyio.fail_after(10):
            await entered.wait()  # the second blob's read waits for the rate limit
    state = storage_of(app).ctx.integrity.scrub_state()
    assert state.lease_holder is None  # released on the way out: no wait for it to expire
    assert state.cursor == ids[0] and state.progress["verified"] == 1
