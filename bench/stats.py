"""Storage statistics over a large index, against the machine's own scan speed.

Also times, through the real app (in process, ASGI), what the usage counters serve:
`GET /health` with a token, `/api/v1/stats`, `/api/v1/buckets`, `/metrics`, and the full
`/api/v1/storage/stats`, each `--requests` times (median and max, milliseconds); and one
counter check (the recomputation a `tfstorage counters check` runs).

    .venv/bin/python bench/stats.py                       # 1,000,000 keys on SQLite
    .venv/bin/python bench/stats.py --keys 200000 --postgres postgresql://postgres@127.0.0.1/postgres

Generates the index in place (tests/index/bulk.py: the same recipe as the must-show test),
then times, `--rounds` times back to back, the full usage report (what
`GET /api/v1/storage/stats` computes) and one bare scan of the versions table
(`SELECT count(*), sum(size) FROM versions`, this machine's floor for touching every
row). The ratio report / scan says what the analytics cost beyond reading the rows once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.index.bulk import Recipe

from tfstorage.api.app import create_app
from tfstorage.config import Settings
from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.analytics import AnalyticsIndex
from tfstorage.index.usage import UsageIndex

TOKEN = "tfs_bench-stats-admin"
ENDPOINTS = (
    "/health",
    "/api/v1/stats",
    "/api/v1/buckets",
    "/metrics",
    "/api/v1/storage/stats?top=10",
    # Tag searches across every bucket: 10 hits among a million keys, no hit at all, and
    # a tag every 10th version carries (a page of 100 out of 110,000).
    "/api/v1/files?tag=needle=yes&limit=100",
    "/api/v1/files?tag=needle=never&limit=100",
    "/api/v1/files?tag=shard=even&limit=100",
    # Size and content type (indexed, revision 0020): a few dozen of the largest, a type
    # every sixth key has, one bucket with no other filter.
    "/api/v1/files?min_size=49950&limit=100",
    "/api/v1/files?content_type=text/csv&limit=100",
    "/api/v1/files?bucket=scale-a&limit=100",
)
NEEDLES = 10


def _tag(engine: Any, keys: int) -> None:
    """Tags on the generated versions: `needle=yes` on a few spread over every bucket,
    `shard=even` on every 10th key, all live (an unselective search must still answer one
    page fast)."""
    step = keys // NEEDLES
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tags (version_id, key, value) VALUES (:v, 'needle', 'yes')"),
            [{"v": i * step + 1} for i in range(NEEDLES)],
        )
        conn.execute(
            text(
                "INSERT INTO tags (version_id, key, value) "
                "SELECT id, 'shard', 'even' FROM versions WHERE id % 10 = 1"
            )
        )


async def _endpoints(url: str, data_dir: Path, requests: int) -> dict[str, dict[str, float]]:
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        admin_token=TOKEN,
        gc_interval_seconds=0,
        lifecycle_interval_seconds=0,
        scrub_interval_seconds=0,
        retention_days=3650,
    )  # type: ignore[call-arg]
    app = create_app(settings)
    out: dict[str, dict[str, float]] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers, timeout=600
        ) as client:
            # Start-up records today's usage snapshot (a full report): let it finish.
            while not (await client.get("/api/v1/storage/stats/history?days=1")).json()["history"]:
                await anyio.sleep(0.2)
            for path in ENDPOINTS:
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (path, response.text[:200])
                out[path] = {
                    "median_ms": round(statistics.median(times), 2),
                    "max_ms": round(max(times), 2),
                }
    return out


def _seconds(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20, help="per endpoint")
    parser.add_argument("--postgres", help="server URL: a scratch database is made and dropped")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="tfs-bench-stats-"))
    admin = None
    if args.postgres:
        name = f"tfs_bench_{uuid.uuid4().hex[:8]}"
        base = make_url(args.postgres).set(drivername="postgresql+psycopg")
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{scratch / 'index.db'}"
    engine = create_index_engine(url)
    try:
        migrate(engine)
        recipe = Recipe(keys=args.keys, blob_period=max(1, args.keys // 5))
        fill = recipe.fill(ObjectIndex(engine))
        _tag(engine, args.keys)
        analytics = AnalyticsIndex(engine)

        def scan() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT count(*), sum(size) FROM versions")).one()

        reports, scans = [], []
        for _ in range(args.rounds):
            scans.append(_seconds(scan))
            reports.append(_seconds(lambda: analytics.usage_report(top=10)))
        report, floor = statistics.median(reports), statistics.median(scans)
        check = _seconds(lambda: UsageIndex(engine).check())
        endpoints = anyio.run(_endpoints, url, scratch / "data", args.requests)
        print(
            json.dumps(
                {
                    "backend": engine.dialect.name,
                    "keys": args.keys,
                    "versions": args.keys + recipe.extras,
                    "fill_seconds": round(fill, 1),
                    "report_seconds": [round(s, 3) for s in reports],
                    "scan_seconds": [round(s, 3) for s in scans],
                    "report_over_scan": round(report / floor, 1),
                    "counter_check_seconds": round(check, 3),
                    "endpoints": endpoints,
                },
                indent=2,
            )
        )
    finally:
        engine.dispose()
        shutil.rmtree(scratch, ignore_errors=True)
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
