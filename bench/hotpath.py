"""Server CPU per small request: N sequential 4 KiB PUT, GET and HEAD on a fresh server.

    .venv/bin/python bench/hotpath.py                 # -n 1000, SQLite, one worker
    .venv/bin/python bench/hotpath.py --profile put   # plus a py-spy summary of that phase
    .venv/bin/python bench/hotpath.py --variant before=/path/to/old/src --variant after=src

Variants (a `src` directory each, put first on the server's PYTHONPATH) run interleaved,
round by round, so that a busy machine slows every side alike.

One keep-alive connection, one request at a time: the figure is the CPU time
(user + system, from /proc/<pid>/stat) the server process spent per request, which is
what caps throughput once the cores are busy; wall time per request is printed beside it.
Every payload is unique (no dedup flattering the PUT figure).
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service import Server, recording, summarize

TICK = os.sysconf("SC_CLK_TCK")
PHASES = ("put", "get", "head")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _request(conn: http.client.HTTPConnection, method: str, path: str, **kw: object) -> None:
    conn.request(method, path, **kw)  # type: ignore[arg-type]
    resp = conn.getresponse()
    resp.read()
    if not 200 <= resp.status < 300:
        raise RuntimeError(f"{method} {path}: HTTP {resp.status}")


def run_phase(
    server: Server, n: int, phase: str, conn: http.client.HTTPConnection, size: int
) -> tuple[float, float]:
    """(server CPU ms, wall ms) per request for `n` requests of `phase`."""
    auth = server.target.auth
    calls: dict[str, Callable[[int], None]] = {
        "put": lambda i: _request(
            conn,
            "PUT",
            f"/api/v1/objects/hot/k/{i}.bin",
            body=secrets.token_bytes(size),
            headers=auth | {"Content-Type": "application/octet-stream"},
        ),
        "get": lambda i: _request(conn, "GET", f"/api/v1/download/hot/k/{i}.bin", headers=auth),
        "head": lambda i: _request(conn, "HEAD", f"/api/v1/download/hot/k/{i}.bin", headers=auth),
    }
    call = calls[phase]
    cpu0, t0 = cpu_seconds(server.pid), time.perf_counter()
    for i in range(n):
        call(i)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    return 1000 * cpu / n, 1000 * wall / n


def one_round(
    args: argparse.Namespace, scratch: Path, r: str, src: str | None
) -> dict[str, tuple[float, float]]:
    log_path = scratch / f"server-{r}.log"
    env = {} if src is None else {"PYTHONPATH": str(Path(src).resolve())}
    with log_path.open("wb") as log:
        server = Server(scratch / f"data-{r}", log, env)
        try:
            conn = server.target.connect()
            _request(
                conn,
                "POST",
                "/api/v1/buckets",
                body=b'{"name":"hot"}',
                headers=server.target.auth | {"Content-Type": "application/json"},
            )
            # Warm up imports, caches and the connection pool on other keys.
            for i in range(50):
                _request(
                    conn,
                    "PUT",
                    f"/api/v1/objects/hot/warm/{i}",
                    body=os.urandom(args.size),
                    headers=server.target.auth,
                )
                _request(conn, "GET", f"/api/v1/download/hot/warm/{i}", headers=server.target.auth)
            out = {}
            for phase in PHASES:
                if args.profile == phase:
                    raw = scratch / f"{phase}-{r}.txt"
                    with recording(server.pid, raw):
                        out[phase] = run_phase(server, args.n, phase, conn, args.size)
                    print(summarize(raw, top=25))
                else:
                    out[phase] = run_phase(server, args.n, phase, conn, args.size)
            conn.close()
            return out
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="requests per phase")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=PHASES)
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=SRC", help="code to compare"
    )
    args = parser.parse_args()
    variants: dict[str, str | None] = dict(v.split("=", 1) for v in args.variant) or {"": None}
    results: dict[str, list[dict[str, tuple[float, float]]]] = {name: [] for name in variants}
    scratch = Path(tempfile.mkdtemp(prefix=".bench-data-hotpath-", dir=Path.cwd()))
    try:
        for r in range(args.rounds):
            for name, src in variants.items():
                results[name].append(one_round(args, scratch, f"{name}{r}", src))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{args.n} sequential {args.size}-byte requests, {args.rounds} rounds (median, min-max)")
    for phase in PHASES:
        for name, rounds in results.items():
            cpu = [r[phase][0] for r in rounds]
            wall = [r[phase][1] for r in rounds]
            print(
                f"  {phase:4} {name:8} server CPU {statistics.median(cpu):.2f} ms/req "
                f"({min(cpu):.2f}-{max(cpu):.2f})   wall {statistics.median(wall):.2f} ms/req"
            )


if __name__ == "__main__":
    main()
