"""What the usage counters cost concurrent writers on PostgreSQL, and what slots buy.

    .venv/bin/python bench/counters.py --postgres postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python bench/counters.py                  # SQLite

In a scratch database, `--writers` threads (each its own connection, as instances and
workers are) commit `--commits` small versions each, unique bodies and keys, all into
one bucket, through `ObjectIndex.commit_version`. Variants, interleaved over `--rounds`:
no counter triggers at all (the floor), triggers with one counter row per bucket and
category (every writer updates the same row), and triggers with `--slots` rows
(default: SLOTS, the shipped setting). Prints commits per second, median and min-max
over the rounds. Without `--postgres`: the same on SQLite (one writer at a time, so
only with and without the triggers).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.index.builders import new_version

from tfstorage.index import ObjectIndex, create_index_engine, migrate
from tfstorage.index.usage import UsageIndex
from tfstorage.index.usage_triggers import SLOTS, drop_statements, trigger_statements


def _variant(engine: Engine, slots: int | None) -> None:
    dialect = engine.dialect.name
    with engine.begin() as conn:
        for statement in drop_statements(dialect):
            conn.exec_driver_sql(statement)
        if slots is not None:
            for statement in trigger_statements(dialect, slots):
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
    parser.add_argument("--postgres", help="server URL (a scratch database); else SQLite")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--commits", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, nargs="+", default=[SLOTS], help="slot counts")
    args = parser.parse_args()
    name = f"tfs_bench_{uuid.uuid4().hex[:8]}"
    scratch = Path(tempfile.mkdtemp(prefix="tfs-bench-counters-"))
    admin = None
    if args.postgres:
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
        index = ObjectIndex(engine)
        index.create_bucket("bench")
        variants: dict[str, int | None] = {"no_counters": None, "one_row": 1}
        if args.postgres:
            variants.update({f"{n}_slots": n for n in args.slots})
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
                    "backend": engine.dialect.name,
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
        shutil.rmtree(scratch, ignore_errors=True)
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
