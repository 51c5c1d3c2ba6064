"""4 KiB PUTs of one content against unique ones, 8 clients, one worker, SQLite.

    .venv/bin/python bench/dedup_puts.py              # 3 rounds of 4 s each, alternated

Every upload of a content already stored is a duplicate: its fresh copy is written,
found to be a duplicate when it commits, and deleted. A dataset of many equal small
files (empty ones, the same label file) is made of such uploads, and they must not cost
more than unique ones. Each round alternates which kind goes first, on a fresh server.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load
from service import Server

CLIENTS = 8
SIZE = 4096


def same_content(prefix: str) -> Callable[[], load.Request]:
    body = os.urandom(SIZE)  # one content for every key of this run
    counter = itertools.count()
    return lambda: ("PUT", f"{prefix}/{next(counter):06d}.bin", body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    kinds = {"unique": load.small_puts, "one content": same_content}
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    scratch = Path(tempfile.mkdtemp(prefix="tfs-dedup-"))
    try:
        for r in range(args.rounds):
            order = list(kinds) if r % 2 == 0 else list(kinds)[::-1]
            for kind in order:
                data = scratch / f"data-{r}-{kind.replace(' ', '-')}"
                with open(scratch / "server.log", "ab") as log:
                    server = Server(data, log)
                    try:
                        # A warm-up on other keys: imports, caches, the first pack.
                        load.hammer(server.target, CLIENTS, 1.0, load.small_puts(
                            "/api/v1/objects/artifacts/warm"))  # fmt: skip
                        run = load.hammer(
                            server.target,
                            CLIENTS,
                            args.seconds,
                            kinds[kind](f"/api/v1/objects/artifacts/{r}"),
                        )
                    finally:
                        server.stop()
                if run.errors:
                    raise RuntimeError(f"{kind}: {run.first_error}")
                results[kind].append(run.summary())
                shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"4 KiB PUT, {CLIENTS} clients, 1 worker, SQLite, median of {args.rounds} rounds")
    for kind, runs in results.items():
        rate = statistics.median(run["ops_per_s"] for run in runs)
        p99 = statistics.median(run["p99_ms"] for run in runs)
        low = min(run["ops_per_s"] for run in runs)
        high = max(run["ops_per_s"] for run in runs)
        print(f"  {kind:12} {rate:7,.0f}/s ({low:,.0f}-{high:,.0f})   p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
