"""What the usage counters cost concurrent writers on PostgreSQL, and what slots buy.

    .venv/bin/python bench/counters.py --postgres postgresql://postgres@127.0.0.1/postgres

In a scratch database, `--writers` threads (each its own connection, as instances and
workers are) commit `--commits` small versions each, unique bodies and keys, all into
one bucket, through `ObjectIndex.commit_version`. Variants, interleaved over `--rounds`:
no counter triggers at all (the floor), triggers with one counter row per bucket and
category (every writer updates the same row), and triggers with SLOTS rows (the
shipped setting). Prints commits per second, median and min-max over the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.index.builders import new_version

from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.usage import UsageIndex
from tfstorage.index.usage_triggers import SLOTS, drop_statements, trigger_statements


def _variant(engine: object, slots: int | None) -> None:
    with engine.begin() as conn:  # type: ignore[attr-defined]
        for statement in drop_statements("postgresql"):
            conn.exec_driver_sql(statement)
        if slots is not None:
            for statement in trigger_statements("postgresql", slots):
                conn.exec_driver_sql(statement)


def _run(index: ObjectIndex, writers: int, commits: int) -> float:
    barrier = threading.Barrier(writers + 1)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(commits):
            body = f"{uuid.uuid4().hex}-{n}-{i}".encode()
            index.commit_version(new_version("bench", f"w{n}/k{i}-{uuid.uuid4().hex[:6]}", body))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return writers * commits / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", required=True, help="server URL (a scratch database)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--commits", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"tfs_bench_{uuid.uuid4().hex[:8]}"
    base = make_url(args.postgres).set(drivername="postgresql+psycopg")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_index_engine(base.set(database=name).render_as_string(hide_password=False))
    try:
        migrate(engine)
        index = ObjectIndex(engine)
        index.create_bucket("bench")
        variants = {"no_counters": None, "one_row": 1, f"{SLOTS}_slots": SLOTS}
        rates: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for label, slots in variants.items():
                _variant(engine, slots)
                rates[label].append(_run(index, args.writers, args.commits))
        _variant(engine, SLOTS)
        UsageIndex(engine).repair()
        assert UsageIndex(engine).check().ok
        print(
            json.dumps(
                {
                    "writers": args.writers,
                    "commits_per_writer": args.commits,
                    "commits_per_second": {
                        label: {
                            "median": round(statistics.median(r)),
                            "min": round(min(r)),
                            "max": round(max(r)),
                        }
                        for label, r in rates.items()
                    },
                },
                indent=2,
            )
        )
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
