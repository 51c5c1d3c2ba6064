"""Storage statistics over a large index, against the machine's own scan speed.

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

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.index.bulk import Recipe

from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.analytics import AnalyticsIndex


def _seconds(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
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
        analytics = AnalyticsIndex(engine)

        def scan() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT count(*), sum(size) FROM versions")).one()

        reports, scans = [], []
        for _ in range(args.rounds):
            scans.append(_seconds(scan))
            reports.append(_seconds(lambda: analytics.usage_report(top=10)))
        report, floor = statistics.median(reports), statistics.median(scans)
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
