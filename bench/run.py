"""`make bench`: the service against this machine's own disk, measured in one run.

Each round measures, back to back, the client against a do-nothing server (its own
ceiling), the disk (write+fsync, cold and warm read of one file), then a fresh server
(1 GiB PUT, multipart POST, cold and warm GET, peak RSS, 4 KiB objects), then (`s3`)
SeaweedFS's S3 API driven directly with boto3 and a fresh server with STORAGE_TYPE=s3 on
it, then (`s3api`) the service's own S3 endpoint against SeaweedFS's, both driven by
obstore and boto3, so that noise on a shared machine falls on every side. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import disk
import load
import s3api
import sdk
import seaweed
import workers
from load import Target
from service import RssSampler, Server, free_port, py_spy, recording, summarize

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PHASES = ("disk", "put", "form", "get", "small", "rss", "s3", "sdk", "tree", "s3api", "workers")
PROFILE_PHASES = ("put", "form", "get", "small-put", "small-get", "s3-put", "s3-get")
LOCAL = {"put", "form", "get", "small", "rss", "sdk", "tree"}  # on a local-disk server
BUCKET = "artifacts"
CLIENTS = 8
HOST = Server.host
OBJECTS = f"/api/v1/objects/{BUCKET}"
DOWNLOAD = f"/api/v1/download/{BUCKET}"
DELETE = f"/api/v1/delete/{BUCKET}"

# The table's rows: key -> (label, unit). Throughputs are in MB/s (10^6 bytes).
METRICS = {
    "disk_write": ("disk write+fsync", "MB/s"),
    "disk_cold_read": ("disk read, cold", "MB/s"),
    "disk_warm_read": ("disk read, warm", "MB/s"),
    "disk_small": (f"disk 4 KiB file+fsync, {CLIENTS} thr", "files/s"),
    "cpu_md5": ("MD5, one core", "MB/s"),
    "cpu_sha256": ("SHA-256, one core", "MB/s"),
    "put": ("PUT raw", "MB/s"),
    "form": ("POST multipart", "MB/s"),
    "get_cold": ("GET, cold cache", "MB/s"),
    "get_warm": ("GET, warm cache", "MB/s"),
    "rss_idle": ("server RSS after start", "MiB"),
    "rss_peak": ("server peak RSS (VmHWM)", "MiB"),
    "small_put": (f"4 KiB PUT, {CLIENTS} clients", "ops/s"),
    "small_get": (f"4 KiB GET, {CLIENTS} clients", "ops/s"),
    "small_delete": (f"4 KiB DELETE, {CLIENTS} clients", "ops/s"),
    "s3_direct_put": ("S3 direct PUT (boto3)", "MB/s"),
    "s3_direct_get": ("S3 direct GET (boto3)", "MB/s"),
    "s3_direct_get_1": ("S3 direct GET, one stream", "MB/s"),
    "s3_put": ("service on S3 PUT", "MB/s"),
    "s3_get": ("service on S3 GET", "MB/s"),
    "s3_rss_peak": ("service on S3 peak RSS (VmHWM)", "MiB"),
    "sdk_multipart": ("SDK multipart, 4 parts in flight", "MB/s"),
    "cp_small": ("cp -r of 4 KiB files", "files/s"),
}
CEILING = "ceiling_"  # prefix of the same keys measured against the null server


def _ratio(a: str, b: str) -> Callable[[dict[str, float]], float | None]:
    return lambda r: r[a] / r[b] if a in r and b in r else None


# (what, its value in one round, ">=" or "<=", target). A ">=" target is judged on the
# median of the rounds; the "<=" one, a peak, on the worst round.
TARGETS: list[tuple[str, Callable[[dict[str, float]], float | None], str, float]] = [
    ("PUT raw / disk write+fsync", _ratio("put", "disk_write"), ">=", 0.8),
    ("POST multipart / PUT raw", _ratio("form", "put"), ">=", 0.7),
    ("GET cold / disk cold read", _ratio("get_cold", "disk_cold_read"), ">=", 0.5),
    ("server peak RSS, MiB", lambda r: r.get("rss_peak"), "<=", 150),
    ("4 KiB PUT/s", lambda r: r.get("small_put"), ">=", 500),
    ("4 KiB GET/s", lambda r: r.get("small_get"), ">=", 1000),
    ("service on S3 PUT / direct PUT", _ratio("s3_put", "s3_direct_put"), ">=", 0.8),
    ("service on S3 GET / direct GET", _ratio("s3_get", "s3_direct_get"), ">=", 0.8),
    ("service on S3 peak RSS, MiB", lambda r: r.get("s3_rss_peak"), "<=", 150),
    ("SDK multipart / PUT raw", _ratio("sdk_multipart", "put"), ">=", 1.0),
    ("cp -r 4 KiB files/s", lambda r: r.get("cp_small"), ">=", 300),
]


def say(text: str = "") -> None:
    print(text, flush=True)


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


# --- the service ----------------------------------------------------------------------------


def service_round(
    root: Path,
    n: int,
    size: int,
    seconds: float,
    phases: set[str],
    log: IO[bytes],
    tree_files: int = 10_000,
) -> dict[str, float]:
    """A fresh server (so VmHWM is this round's peak) on its own data dir, removed after."""
    data_dir = root / f"server-{n}"
    server = Server(data_dir, log)
    try:
        out = {"rss_idle": server.status_kib("VmRSS") / 1024}
        if server.health_status != 200:
            say(f"  warning: GET /health answered {server.health_status}; measuring anyway")
        if phases & {"put", "form", "get", "rss", "sdk"}:  # sdk is judged against put
            out |= big_objects(server, n, size, phases)
        if "small" in phases:
            out |= small_objects(server.target, f"bench/small/{n}", seconds)
        if "sdk" in phases:
            out |= sdk.multipart(server, root, n, size)
        if "tree" in phases:
            out |= sdk.small_tree(server, root, n, tree_files)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


def big_objects(server: Server, n: int, size: int, phases: set[str]) -> dict[str, float]:
    """PUT (always: GET and RSS need it), multipart POST, cold and warm GET; peak RSS."""
    target = server.target
    out, created = {}, []
    with RssSampler(server) as sampler:
        key = f"bench/{n}.bin"
        seconds, answer = load.put_raw(target, f"{OBJECTS}/{key}", size)
        out["put"] = mb_per_s(size, seconds)
        created.append((key, answer["file_id"]))
        if "form" in phases:
            form_key = f"bench/{n}-form.bin"
            fields = {"bucket": BUCKET, "key": form_key}
            seconds, answer = load.post_form(
                target, "/api/v1/upload", fields, f"{n}-form.bin", size
            )
            out["form"] = mb_per_s(size, seconds)
            created.append((form_key, answer["file_id"]))
        if "get" in phases:
            disk.drop_page_cache(server.blob_files())
            out["get_cold"] = mb_per_s(size, load.get(target, f"{DOWNLOAD}/{key}", size))
            out["get_warm"] = mb_per_s(size, load.get(target, f"{DOWNLOAD}/{key}", size))
    out["rss_peak"] = server.status_kib("VmHWM") / 1024
    out["rss_sampled"] = sampler.peak_kib / 1024
    for key, file_id in created:  # for good: the bytes go at the next GC
        load.delete(target, f"{DELETE}/{key}?version_id={file_id}")
    return out


def small_objects(target: Target, prefix: str, seconds: float) -> dict[str, float]:
    """8 clients PUT 4 KiB objects for `seconds`, GET them for `seconds`, DELETE them all."""
    disk.settle_writeback()
    puts = load.hammer(target, CLIENTS, seconds, load.small_puts(f"{OBJECTS}/{prefix}"))
    if not puts.done:
        raise RuntimeError(f"no 4 KiB PUT succeeded: {puts.first_error}")
    keys = [path.removeprefix(OBJECTS) for path in puts.done]
    gets = load.hammer(target, CLIENTS, seconds, load.small_gets([DOWNLOAD + k for k in keys]))
    deletes = load.hammer(target, CLIENTS, math.inf, load.small_deletes([DELETE + k for k in keys]))
    for name, phase in (("PUT", puts), ("GET", gets), ("DELETE", deletes)):
        if phase.errors:
            say(f"  warning: {phase.errors} 4 KiB {name}s failed, first: {phase.first_error}")
    return {
        "small_put": puts.per_second,
        "small_get": gets.per_second,
        "small_delete": deletes.per_second,
        "small_put_p99_ms": puts.summary()["p99_ms"],
        "small_get_p99_ms": gets.summary()["p99_ms"],
    }


# --- S3: SeaweedFS directly, then the service on it --------------------------------------------


def s3_round(
    root: Path, n: int, size: int, engine: seaweed.SeaweedFS, log: IO[bytes]
) -> dict[str, float]:
    """boto3 PUT and GET on the engine, then a fresh server on it: PUT, GET, peak RSS.

    Every GET is cold: SeaweedFS's volume files are dropped from the page cache first.
    `s3_direct_get_1` (one GetObject, no ranges) is for reading only; no target uses it.
    """
    s3 = seaweed.client(engine)
    key = f"direct/{n}.bin"
    out = {"s3_direct_put": mb_per_s(size, seaweed.put(s3, key, size))}
    disk.drop_page_cache(seaweed.data_files(engine))
    out["s3_direct_get"] = mb_per_s(size, seaweed.get(s3, key, size))
    disk.drop_page_cache(seaweed.data_files(engine))
    out["s3_direct_get_1"] = mb_per_s(size, seaweed.get_stream(s3, key, size))
    s3.delete_object(Bucket=engine.bucket, Key=key)

    data_dir = root / f"server-s3-{n}"
    server = Server(data_dir, log, seaweed.service_env(engine))
    try:
        if server.health_status != 200:
            say(f"  warning: GET /health on S3 answered {server.health_status}; measuring anyway")
        target = server.target
        key = f"bench/s3-{n}.bin"
        with RssSampler(server) as sampler:
            seconds, answer = load.put_raw(target, f"{OBJECTS}/{key}", size)
            out["s3_put"] = mb_per_s(size, seconds)
            disk.drop_page_cache(seaweed.data_files(engine))
            out["s3_get"] = mb_per_s(size, load.get(target, f"{DOWNLOAD}/{key}", size))
        out["s3_rss_peak"] = server.status_kib("VmHWM") / 1024
        out["s3_rss_sampled"] = sampler.peak_kib / 1024
        load.delete(target, f"{DELETE}/{key}?version_id={answer['file_id']}")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return out


# --- the client's own ceiling ---------------------------------------------------------------


def client_ceiling(
    size: int, seconds: float, phases: set[str], workers_list: Sequence[int] = ()
) -> dict[str, float]:
    """The same client against `nullserver.py`, which does nothing, on the same cores."""
    port = free_port()
    script = Path(__file__).with_name("nullserver.py")
    null = subprocess.Popen([sys.executable, str(script), str(port)])
    out = {}
    try:
        _wait_listening(port)
        target = Target(HOST, port, "null")
        if phases & {"put", "form", "get", "rss", "s3"}:
            out["put"] = mb_per_s(size, load.put_raw(target, "/null", size)[0])
        if "form" in phases:
            out["form"] = mb_per_s(size, load.post_form(target, "/null", {}, "f", size)[0])
        if phases & {"get", "s3"}:
            out["get_cold"] = mb_per_s(size, load.get(target, f"/big/{size}", size))
        if "s3" in phases:  # the service on S3 has the same client
            out["s3_put"], out["s3_get"] = out["put"], out["get_cold"]
            if not phases & {"put", "form", "get", "rss"}:
                del out["put"]
            if "get" not in phases:
                del out["get_cold"]
        if phases & {"small", "workers"}:
            s = min(seconds, 3.0)
            puts = load.hammer(target, CLIENTS, s, load.small_puts("/null"))
            gets = load.hammer(target, CLIENTS, s, load.small_gets(["/null"]))
            out["small_put"], out["small_get"] = puts.per_second, gets.per_second
            for n in workers_list if "workers" in phases else ():  # the same client
                for index in workers.INDEXES:
                    out[workers.key(index, n, "put")] = puts.per_second
                    out[workers.key(index, n, "get")] = gets.per_second
    finally:
        null.kill()
        null.wait()
    return {CEILING + k: v for k, v in out.items()}


def _wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the null server did not start")


# --- profiling ------------------------------------------------------------------------------


def profile(
    root: Path,
    phase: str,
    size: int,
    seconds: float,
    output: Path,
    log: IO[bytes],
    engine: seaweed.SeaweedFS | None = None,
) -> None:
    """An extra pass, not in the figures: `phase` on a fresh server under py-spy.

    `s3-put` and `s3-get` are `put` and `get` on a server with STORAGE_TYPE=s3 on `engine`.
    """
    on_s3 = phase.startswith("s3-")
    if on_s3:
        assert engine is not None
        phase = phase.removeprefix("s3-")
    env = seaweed.service_env(engine) if on_s3 and engine else None
    server = Server(root / "server-profile", log, env)
    target = server.target
    key = "bench/profile.bin"
    try:
        paths: list[str] = []
        if phase == "get":
            load.put_raw(target, f"{OBJECTS}/{key}", size)
            disk.drop_page_cache(
                seaweed.data_files(engine) if on_s3 and engine else server.blob_files()
            )
        elif phase == "small-get":
            puts = load.hammer(target, CLIENTS, seconds, load.small_puts(f"{OBJECTS}/p"))
            paths = [DOWNLOAD + p.removeprefix(OBJECTS) for p in puts.done]
        with recording(server.pid, output):
            if phase == "put":
                load.put_raw(target, f"{OBJECTS}/{key}", size)
            elif phase == "form":
                fields = {"bucket": BUCKET, "key": key}
                load.post_form(target, "/api/v1/upload", fields, "profile.bin", size)
            elif phase == "get":
                load.get(target, f"{DOWNLOAD}/{key}", size)
            elif phase == "small-put":
                load.hammer(target, CLIENTS, seconds, load.small_puts(f"{OBJECTS}/p"))
            else:
                load.hammer(target, CLIENTS, seconds, load.small_gets(paths))
    finally:
        server.stop()
        shutil.rmtree(root / "server-profile", ignore_errors=True)
    what = f"{phase} on S3" if on_s3 else phase
    say(f"\nserver profile during {what} ({output.relative_to(REPO)}): {summarize(output)}")


# --- the report -----------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:,.0f}"


def row(label: str, *cells: str) -> str:
    return f"{label:34}" + "".join(f"{c:>11}" for c in cells)


def report(rounds: list[dict[str, float]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if any(key in r for r in rounds for key in METRICS):
        say("\n" + row("measurement", "unit", "median", "min", "max", "client max"))
    for key, (label, unit) in METRICS.items():
        values = [r[key] for r in rounds if key in r]
        if not values:
            continue
        s = summary[key] = spread(values) | {"values": values}
        roofs = [r[CEILING + key] for r in rounds if CEILING + key in r]
        roof = fmt(statistics.median(roofs)) if roofs else ""
        say(row(label, unit, fmt(s["median"]), fmt(s["min"]), fmt(s["max"]), roof))

    targets = []
    for what, value, op, goal in TARGETS:
        values = [v for r in rounds if (v := value(r)) is not None]
        if not values:
            continue
        if not targets:
            head = ("median", "min", "max", "target", "result")
            say("\n" + row(f"target ({len(rounds)} rounds)", *head))
        s = spread(values)
        judged = s["median"] if op == ">=" else s["max"]
        result = "PASS" if (judged >= goal if op == ">=" else judged <= goal) else "MISS"
        target = f"{op} {fmt(goal)}"
        say(row(what, fmt(s["median"]), fmt(s["min"]), fmt(s["max"]), target, result))
        targets.append(s | {"what": what, "op": op, "target": goal, "result": result})
    return {"summary": summary, "targets": targets}


def machine(data_dir: Path) -> dict[str, Any]:
    fs = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(data_dir)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": " ".join(fs) or "unknown",
        "drop_caches": disk.can_drop_all_caches(),
        "load_average_1m_at_start": os.getloadavg()[0],
    }


# --- main -----------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """`1GiB`, `512MiB`, `1GB` (powers of 1024, as MAX_FILE_SIZE), or plain bytes."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m[1]) * 1024 ** " KMGT".index(m[2].upper() or " ")


def parse_workers(text: str) -> list[int]:
    try:
        counts = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}")
    return sorted(set(counts))


def parse_phases(text: str) -> set[str]:
    phases = {p.strip() for p in text.split(",") if p.strip()}
    if unknown := phases - set(PHASES):
        raise argparse.ArgumentTypeError(f"unknown phase(s): {', '.join(sorted(unknown))}")
    return phases


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--size", type=parse_size, default="1GiB", help="big objects (1GiB)")
    ap.add_argument("--small-seconds", type=float, default=10.0, help="per 4 KiB phase (10)")
    ap.add_argument("--tree-files", type=int, default=10_000, help="files of `tree` (10000)")
    ap.add_argument("--data-dir", type=Path, help="parent of the scratch dir (default: repo)")
    ap.add_argument(
        "--only", type=parse_phases, default=set(PHASES), help=f"some of {','.join(PHASES)}"
    )
    ap.add_argument(
        "--workers", type=parse_workers, default=[1, 2], help="WORKERS of `workers` (1,2)"
    )
    ap.add_argument(
        "--postgres",
        default=workers.DEFAULT_POSTGRES,
        help="server of `workers`' PostgreSQL rows (scratch databases); '' for none",
    )
    ap.add_argument("--profile", choices=PROFILE_PHASES, help="then py-spy the server in one")
    args = ap.parse_args()
    if args.profile and py_spy() is None:
        ap.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    return args


def main() -> None:
    args = arguments()
    phases, size = args.only, args.size
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (args.data_dir or REPO).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".bench-data-", dir=args.data_dir or REPO))
    log_path = RESULTS / f"{stamp}-server.log"
    info = machine(root)
    drop = "POSIX_FADV_DONTNEED + drop_caches" if info["drop_caches"] else "POSIX_FADV_DONTNEED"
    say(f"bench: {args.rounds} rounds, {size / 2**20:,.0f} MiB, {','.join(sorted(phases))}")
    say(f"  scratch {root} on {info['filesystem']}, cold = {drop}")
    say(
        f"  {info['cpus']} CPUs, load average {info['load_average_1m_at_start']:.1f} (others' work)"
    )

    postgres = None
    if "workers" in phases:
        METRICS.update(workers.metrics(args.workers))
        postgres = args.postgres or None
        if postgres and (why := workers.postgres_reachable(postgres)):
            say(f"  warning: {why}; the `workers` phase measures SQLite only")
            postgres = None

    rounds: list[dict[str, float]] = []
    try:
        with log_path.open("ab") as log, contextlib.ExitStack() as engines:
            engine = None
            if phases & {"s3", "s3api"} or (args.profile or "").startswith("s3-"):
                engine = engines.enter_context(seaweed.running(root / "seaweedfs"))
                say(f"  SeaweedFS at {engine.endpoint_url}, bucket {engine.bucket}")
            s3api_phase = s3api.Phase(root, engine, log) if engine and "s3api" in phases else None
            for n in range(1, args.rounds + 1):
                r: dict[str, float] = {}
                if phases - {"disk", "s3api"}:  # s3api compares two servers, same clients
                    r |= client_ceiling(size, args.small_seconds, phases, args.workers)
                if "disk" in phases:
                    r |= disk.measure(root, size)
                    r |= disk.hashing(min(size, 256 * disk.MiB))
                    if "small" in phases:
                        r["disk_small"] = disk.small_files(root, min(args.small_seconds, 3.0))
                if phases & LOCAL:
                    r |= service_round(
                        root, n, size, args.small_seconds, phases, log, args.tree_files
                    )
                if "s3" in phases:
                    assert engine is not None
                    r |= s3_round(root, n, size, engine, log)
                if s3api_phase is not None:
                    r |= s3api_phase.round(n, size, args.small_seconds)
                if "workers" in phases:
                    r |= workers.run_round(root, n, args.small_seconds, args.workers, postgres, log)
                rounds.append(r)
                shown = {
                    k: v
                    for k, v in r.items()
                    if not k.startswith(("s3api_small_", CEILING + "workers_"))
                    and not (k.startswith("workers_") and k.endswith("_p99_ms"))
                }
                say(f"  round {n}: " + ", ".join(f"{k} {fmt(v)}" for k, v in shown.items()))
            if args.profile:
                output = RESULTS / f"{stamp}-profile-{args.profile}.txt"
                profile(root, args.profile, size, args.small_seconds, output, log, engine)
    except Exception:
        say(f"\nfailed; the server's output is in {log_path.relative_to(REPO)}")
        raise
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if log_path.exists() and log_path.stat().st_size == 0:
            log_path.unlink()

    results = report(rounds)
    results["s3api"] = s3api.report(rounds, size)
    settings = {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}
    info["load_average_1m_at_end"] = os.getloadavg()[0]
    record = {
        "timestamp": stamp,
        "args": settings | {"data_dir": str(args.data_dir or "")},
        "machine": info,
        "rounds": rounds,
        **results,
    }
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    say(f"\nresults: {path.relative_to(REPO)}")
    if log_path.exists():
        say(f"server log (not empty): {log_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
