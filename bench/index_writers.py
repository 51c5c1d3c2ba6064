"""Index commits/s from several processes on one SQLite file, code versions side by side.

    .venv/bin/python bench/index_writers.py --variant before=<old checkout>/src --variant after=src

Each of `--processes` (default 1,2) processes runs `--threads` writer threads (default 8)
calling `ObjectIndex.commit_version` (a small new version, as a 4 KiB PUT commits) in a
loop for `--seconds`; all start together on a fresh SQLite file in the scratch dir. The
figure is the commits/s of all processes together: with several processes, how much
their commits queue behind each other's fsyncs (issue 11). No HTTP, no blobs, so the
index's part alone; `--variant` runs each source tree round by round (interleaved, a
busy moment of a shared machine hits each alike).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child(database: str, seconds: float, threads: int, start_at: float) -> None:
    """In a subprocess whose PYTHONPATH is the variant's src: commit until the deadline."""
    from tfstorage.domain.records import NewVersion
    from tfstorage.index import ObjectIndex, create_index_engine

    engine = create_index_engine(f"sqlite:///{database}")
    index = ObjectIndex(engine)
    counts = [0] * threads

    def work(n: int) -> None:
        deadline = start_at + seconds
        while time.time() < deadline:
            data = os.urandom(16)
            index.commit_version(
                NewVersion(
                    bucket="bench",
                    key=f"{os.getpid()}/{n}/{counts[n]}",
                    blob_id=uuid.uuid4().hex,
                    size=len(data),
                    md5=hashlib.md5(data).hexdigest(),
                    sha256=hashlib.sha256(data).hexdigest(),
                    content_type="application/octet-stream",
                    metadata={},
                    tags={},
                    created_by="bench",
                )
            )
            counts[n] += 1

    time.sleep(max(0.0, start_at - time.time()))
    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    engine.dispose()
    print(sum(counts))


def prepare(src: str, database: str) -> None:
    code = (
        "import sys; from tfstorage.index import ObjectIndex, create_index_engine, migrate; "
        "e = create_index_engine('sqlite:///' + sys.argv[1]); migrate(e); "
        "ObjectIndex(e).create_bucket('bench'); e.dispose()"
    )
    subprocess.run([sys.executable, "-c", code, database], env=_env(src), check=True)


def measure(src: str, scratch: Path, processes: int, threads: int, seconds: float) -> float:
    database = str(scratch / f"index-{uuid.uuid4().hex[:8]}.db")
    prepare(src, database)
    start_at = time.time() + 1.5  # the interpreters start before the clock does
    cmd = [sys.executable, __file__, "--child", database, str(seconds), str(threads)]
    procs = [
        subprocess.Popen([*cmd, str(start_at)], env=_env(src), stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    total = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"a writer process failed ({proc.returncode})")
        total += int(out.strip().splitlines()[-1])
    for suffix in ("", "-wal", "-shm", ".migrate-lock"):
        Path(database + suffix).unlink(missing_ok=True)
    return total / seconds


def _env(src: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(Path(src).resolve())}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        database, seconds, threads, start_at = sys.argv[2:6]
        child(database, float(seconds), int(threads), float(start_at))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", action="append", help="name=path/to/src (default: this src)")
    ap.add_argument("--processes", default="1,2", help="writer process counts (1,2)")
    ap.add_argument("--threads", type=int, default=8, help="writer threads per process (8)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per measurement (5)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-dir", type=Path, help="parent of the scratch dir (default: repo)")
    args = ap.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant or [f"this={REPO / 'src'}"])
    counts = [int(p) for p in args.processes.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix=".bench-data-", dir=args.data_dir or REPO))
    rates: dict[str, list[float]] = {}
    try:
        for n in range(args.rounds):
            for name, src in variants.items():
                for p in counts:
                    rate = measure(src, scratch, p, args.threads, args.seconds)
                    rates.setdefault(f"{name}, {p} process(es)", []).append(rate)
                    print(f"  round {n + 1}: {name}, {p} process(es): {rate:,.0f} commits/s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        label: {"median": round(statistics.median(r)), "min": round(min(r)), "max": round(max(r))}
        for label, r in rates.items()
    }
    print(json.dumps({"threads": args.threads, "seconds": args.seconds} | summary, indent=2))


if __name__ == "__main__":
    main()
