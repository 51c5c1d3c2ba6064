"""The `workers` phase: 4 KiB PUT, GET and HEAD over REST with `WORKERS=1,2,...` worker
processes, on SQLite and on PostgreSQL (issue 11: several processes must not serialise
their writes on SQLite; on PostgreSQL they scale them).

Each (index, workers) pair gets a fresh server on its own DATA_DIR, and on PostgreSQL its
own scratch database, created before and dropped after; the pairs' order rotates with
the round so that a busy moment of a shared machine does not always hit the same one.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import disk
import load
from service import Server

BUCKET = "artifacts"
OBJECTS = f"/api/v1/objects/{BUCKET}"
DOWNLOAD = f"/api/v1/download/{BUCKET}"
CLIENTS = 8
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
INDEXES = ("sqlite", "pg")
OPS = ("put", "get", "head")
# Per measurement, as the s3api group: (indexes x worker counts x 3) of them a round.
MAX_SECONDS = 5.0


def key(index: str, workers: int, op: str) -> str:
    return f"workers_{index}_{workers}_{op}"


def metrics(workers: list[int]) -> dict[str, tuple[str, str]]:
    """The table's rows: `workers_<index>_<N>_<op>` -> (label, unit)."""
    names = {"sqlite": "SQLite", "pg": "PostgreSQL"}
    return {
        key(index, n, op): (f"4 KiB {op.upper()}, {names[index]}, {n} wkr", "ops/s")
        for index in INDEXES
        for n in workers
        for op in OPS
    }


def postgres_reachable(url: str) -> str | None:
    """None when a server answers at `url`, else why not (the PostgreSQL rows are then
    left out, with a warning)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        psycopg.connect(_conninfo(url), connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable ({type(exc).__name__})"
    return None


def run_round(
    root: Path,
    n: int,
    seconds: float,
    workers: list[int],
    postgres: str | None,
    log: IO[bytes],
) -> dict[str, float]:
    pairs = [(index, w) for index in INDEXES for w in workers if index == "sqlite" or postgres]
    shift = (n - 1) % len(pairs)
    seconds = min(seconds, MAX_SECONDS)
    out: dict[str, float] = {}
    for index, w in pairs[shift:] + pairs[:shift]:
        with _database(index, postgres) as url:
            env = {"WORKERS": str(w)} | ({"DATABASE_URL": url} if url else {})
            data_dir = root / f"server-{index}-{w}w-{n}"
            server = Server(data_dir, log, env)
            try:
                out |= _measure(server, f"bench/w{n}", seconds, index, w)
            finally:
                server.stop()
                shutil.rmtree(data_dir, ignore_errors=True)
    return out


def _measure(server: Server, prefix: str, seconds: float, index: str, w: int) -> dict[str, float]:
    target = server.target
    disk.settle_writeback()
    puts = load.hammer(target, CLIENTS, seconds, load.small_puts(f"{OBJECTS}/{prefix}"))
    if not puts.done:
        raise RuntimeError(f"no 4 KiB PUT succeeded ({index}, {w} workers): {puts.first_error}")
    paths = [DOWNLOAD + p.removeprefix(OBJECTS) for p in puts.done]
    gets = load.hammer(target, CLIENTS, seconds, load.small_gets(paths))
    heads = load.hammer(target, CLIENTS, seconds, load.small_heads(paths))
    out = {}
    for op, phase in zip(OPS, (puts, gets, heads), strict=True):
        if phase.errors:
            print(
                f"  warning: {phase.errors} 4 KiB {op.upper()}s failed ({index}, {w} workers), "
                f"first: {phase.first_error}",
                flush=True,
            )
        out[key(index, w, op)] = phase.per_second
        out[key(index, w, op) + "_p99_ms"] = phase.summary()["p99_ms"]
    return out


@contextlib.contextmanager
def _database(index: str, postgres: str | None) -> Iterator[str | None]:
    """None for SQLite (the server's default file in its DATA_DIR); on PostgreSQL a
    scratch database, dropped afterwards whatever happens."""
    if index == "sqlite" or postgres is None:
        yield None
        return
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"tfs_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(postgres), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = make_url(postgres).set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
