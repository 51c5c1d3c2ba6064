"""The `s3api` phase: this service's S3 endpoint against SeaweedFS's S3 API.

Both are driven by the same two clients, obstore (Rust, async: what a data loader uses)
and boto3 (what everyone else uses), with the same settings on both sides, back to back
in the same round. The service is a fresh `tfstorage serve` (local disk, SQLite, its S3
endpoint on a free port, the admin token's key pair from DATA_DIR/admin.s3), so its
VmHWM is this round's; SeaweedFS is the one the run started (`seaweed.running`).
"""

from __future__ import annotations

import asyncio
import configparser
import io
import math
import os
import random
import shutil
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import obstore
from obstore.store import S3Store

import seaweed
from disk import MiB, chunks, drop_page_cache, settle_writeback
from load import Load
from service import RssSampler, Server, free_port

if TYPE_CHECKING:
    from tests.s3.fixtures import SeaweedFS  # for the type checker only

BUCKET = seaweed.BUCKET  # the same name on both sides
PART_SIZE = seaweed.PART_SIZE  # 16 MiB parts, 2 in flight, for both clients
CONCURRENCY = seaweed.CONCURRENCY
CLIENTS = 8  # concurrent 4 KiB clients
SMALL = 4096
SMALL_SECONDS = 5.0  # at most, each of the 12 4 KiB measurements of a round
LIST_KEYS = 10_000
LIST_PREFIX = "s3api/list/"  # the listing's keys, made once per run
PAGE = 1000  # ListObjectsV2 max-keys (both servers' default, and S3's)
SIDES = {"svc": "service", "weed": "SeaweedFS"}
DRIVERS = ("obstore", "boto3")
SMALL_OPS = ("put", "get", "head")


@dataclass(frozen=True)
class Endpoint:
    """One S3 API and what its GETs read from disk (dropped from the cache before them)."""

    side: str  # a key of SIDES
    url: str
    access_key: str
    secret_key: str
    region: str
    cache_files: Callable[[], list[Path]]

    def ready(self) -> Endpoint:
        """Both clients made now, not inside a timed call."""
        _ = self.s3, self.store
        return self

    @cached_property
    def s3(self) -> Any:
        """One boto3 client for everything (thread-safe, pooled), made before any timing."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                # boto3 >= 1.36 adds CRC32 to every request: neither side needs it, and
                # the existing `s3` group measures SeaweedFS without it too.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1, "mode": "standard"},
                max_pool_connections=CLIENTS + 2,
                read_timeout=120,
            ),
        )

    @cached_property
    def store(self) -> S3Store:
        return S3Store(
            BUCKET,
            endpoint=self.url,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=self.region,
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": True,
                "connect_timeout": timedelta(seconds=5),
                "read_timeout": timedelta(seconds=120),
                "timeout": timedelta(hours=1),  # a whole 1 GiB GET, on a busy machine
                "pool_max_idle_per_host": str(CLIENTS + 2),
            },
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1)},
        )


def service_env(s3_port: int) -> dict[str, str]:
    return {"S3_PORT": str(s3_port), "S3_REGION": "us-east-1"}


def _big_blobs(server: Server) -> list[Path]:
    return [p for p in server.blob_files() if p.stat().st_size >= MiB]


def service_endpoint(server: Server, s3_port: int, first: bool) -> Endpoint:
    """The admin token's key pair, which the server's first start wrote to admin.s3; the
    bucket made (on the first start) unversioned, as SeaweedFS's."""
    _wait_listening(s3_port)
    parser = configparser.ConfigParser(interpolation=None)
    deadline = time.monotonic() + 30
    # With WORKERS=2 one worker may answer before the other has written the key pair.
    while not parser.read(server.data_dir / "admin.s3") or not parser.has_section("default"):
        if time.monotonic() > deadline:
            raise RuntimeError("the server wrote no admin.s3 key pair within 30 s")
        time.sleep(0.1)
    pair = parser["default"]
    endpoint = Endpoint(
        "svc",
        f"http://{server.host}:{s3_port}",
        pair["aws_access_key_id"],
        pair["aws_secret_access_key"],
        "us-east-1",
        lambda: _big_blobs(server),
    )
    if first:
        s3 = endpoint.s3
        s3.create_bucket(Bucket=BUCKET)
        config = {"Status": "Suspended"}
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration=config)
    return endpoint


def seaweed_endpoint(engine: SeaweedFS) -> Endpoint:
    return Endpoint(
        "weed",
        engine.endpoint_url,
        engine.access_key,
        engine.secret_key,
        engine.region,
        lambda: seaweed.data_files(engine),
    )


def _wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((Server.host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 endpoint did not listen on {port}") from None
            time.sleep(0.05)


# --- 1 GiB: multipart PUT, then a cold GET ------------------------------------------------------


def _fresh_chunks(size: int) -> Iterator[bytes]:
    """`disk.chunks` copied: obstore may hold a piece after asking for the next."""
    for piece in chunks(size):
        yield bytes(piece)


def big_put(driver: str, endpoint: Endpoint, key: str, size: int) -> float:
    """Multipart upload, 16 MiB parts, 2 in flight (as the `s3` group); seconds."""
    start = time.perf_counter()
    if driver == "obstore":
        obstore.put(
            endpoint.store,
            key,
            _fresh_chunks(size),
            chunk_size=PART_SIZE,
            max_concurrency=CONCURRENCY,
        )
    else:
        payload = io.BufferedReader(seaweed.Payload(size), MiB)
        config = seaweed.transfer_config()
        endpoint.s3.upload_fileobj(payload, BUCKET, key, Config=config)
    return time.perf_counter() - start


def big_get(driver: str, endpoint: Endpoint, key: str, size: int) -> float:
    """A cold GET: obstore streams one GetObject (4 MiB pieces); boto3 downloads 16 MiB
    ranges, 2 at a time, as `download_fileobj` does. Seconds."""
    drop_page_cache(endpoint.cache_files())
    start = time.perf_counter()
    if driver == "obstore":
        total = 0
        for piece in obstore.get(endpoint.store, key).stream(min_chunk_size=4 * MiB):
            total += len(piece)
    else:
        sink = seaweed.Sink()
        config = seaweed.transfer_config()
        endpoint.s3.download_fileobj(BUCKET, key, sink, Config=config)
        total = sink.written
    elapsed = time.perf_counter() - start
    if total != size:
        raise RuntimeError(f"{driver} GET {key} on {endpoint.side}: {total} bytes, not {size}")
    return elapsed


# --- 4 KiB objects, 8 clients -------------------------------------------------------------------

# One operation on one key; raises on failure.
Op = Callable[[str], None]
AsyncOp = Callable[[str], Awaitable[object]]


def _record(load: Load, key: str, sent: float, error: BaseException | None) -> None:
    load.latencies.append(time.perf_counter() - sent)
    if error is None:
        load.ok += 1
        load.done.append(key)
    else:
        load.errors += 1
        load.first_error = load.first_error or f"{key}: {type(error).__name__}: {error}"[:500]


def _hammer_threads(seconds: float, next_key: Callable[[], str], op: Op) -> Load:
    """boto3: `CLIENTS` threads, one shared client (it is thread-safe, pooled)."""
    load = Load()
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def client() -> None:
        while time.perf_counter() < deadline:
            with lock:
                key = next_key()
            sent, error = time.perf_counter(), None
            try:
                op(key)
            except Exception as exc:
                error = exc
            with lock:
                _record(load, key, sent, error)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.seconds = time.perf_counter() - start
    return load


def _hammer_async(seconds: float, next_key: Callable[[], str], op: AsyncOp) -> Load:
    """obstore: `CLIENTS` tasks on one store (its connection pool) and one event loop."""
    load = Load()

    async def run() -> None:
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                key = next_key()
                sent, error = time.perf_counter(), None
                try:
                    await op(key)
                except Exception as exc:
                    error = exc
                _record(load, key, sent, error)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        load.seconds = time.perf_counter() - start

    asyncio.run(run())
    return load


def _sequence(prefix: str) -> Callable[[], str]:
    counter = iter(range(10**9))
    return lambda: f"{prefix}{next(counter):06d}"


def small_objects(driver: str, endpoint: Endpoint, prefix: str, seconds: float) -> dict[str, Load]:
    """PUT distinct 4 KiB objects (random bytes each) for `seconds`, then GET random ones
    of them for `seconds`, then HEAD random ones for `seconds`."""
    loads: dict[str, Load] = {}
    if driver == "obstore":
        store = endpoint.store

        async def put(key: str) -> None:
            await obstore.put_async(store, key, os.urandom(SMALL))

        async def get(key: str) -> None:
            body = await (await obstore.get_async(store, key)).bytes_async()
            if len(body) != SMALL:
                raise RuntimeError(f"{len(body)} bytes")

        async def head(key: str) -> None:
            await obstore.head_async(store, key)

        loads["put"] = _hammer_async(seconds, _sequence(prefix), put)
        keys = _written(loads["put"])
        loads["get"] = _hammer_async(seconds, lambda: random.choice(keys), get)
        loads["head"] = _hammer_async(seconds, lambda: random.choice(keys), head)
    else:
        s3 = endpoint.s3

        def put_sync(key: str) -> None:
            s3.put_object(Bucket=BUCKET, Key=key, Body=os.urandom(SMALL))

        def get_sync(key: str) -> None:
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if len(body) != SMALL:
                raise RuntimeError(f"{len(body)} bytes")

        def head_sync(key: str) -> None:
            s3.head_object(Bucket=BUCKET, Key=key)

        loads["put"] = _hammer_threads(seconds, _sequence(prefix), put_sync)
        keys = _written(loads["put"])
        loads["get"] = _hammer_threads(seconds, lambda: random.choice(keys), get_sync)
        loads["head"] = _hammer_threads(seconds, lambda: random.choice(keys), head_sync)
    return loads


def _written(load: Load) -> list[str]:
    if not load.done:
        raise RuntimeError(f"no 4 KiB PUT succeeded: {load.first_error}")
    return list(load.done)


# --- listing ------------------------------------------------------------------------------------


def create_keys(endpoint: Endpoint, prefix: str, count: int) -> None:
    """`count` empty-ish objects under `prefix`, 8 obstore clients at once; not timed."""
    store = endpoint.store
    todo = iter(range(count))

    async def client() -> None:
        for n in todo:
            await obstore.put_async(store, f"{prefix}{n:05d}", b"x")

    async def run() -> None:
        await asyncio.gather(*(client() for _ in range(CLIENTS)))

    asyncio.run(run())


def list_keys(driver: str, endpoint: Endpoint, prefix: str = LIST_PREFIX) -> float:
    """ListObjectsV2 of `prefix`, `PAGE` keys a page, to the end; seconds."""
    start = time.perf_counter()
    if driver == "obstore":
        # object_store asks for no max-keys: the server's default, 1000, as S3's.
        found = sum(len(page) for page in obstore.list(endpoint.store, prefix, chunk_size=PAGE))
    else:
        paginator = endpoint.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=BUCKET, Prefix=prefix, PaginationConfig={"PageSize": PAGE}
        )
        found = sum(page.get("KeyCount", 0) for page in pages)
    elapsed = time.perf_counter() - start
    if found != LIST_KEYS:
        raise RuntimeError(f"{driver} listed {found} keys on {endpoint.side}, not {LIST_KEYS}")
    return elapsed


# --- the rounds ---------------------------------------------------------------------------------


class Phase:
    """The `s3api` group of a run: one data dir for the service's processes, kept between
    rounds with the listing's keys, which are created once, in the first round."""

    def __init__(self, root: Path, engine: SeaweedFS, log: IO[bytes]) -> None:
        self._data_dir = root / "server-s3api"
        self._log = log
        self._weed = seaweed_endpoint(engine)
        self._started = False  # the bucket is made on the first start
        self._listed = False

    def round(self, n: int, size: int, seconds: float) -> dict[str, float]:
        """A fresh server process (its VmHWM is this round's); each measurement on both
        sides back to back, the side that goes first alternating with the round."""
        s3_port = free_port()
        server = Server(self._data_dir, self._log, service_env(s3_port))
        try:
            svc = service_endpoint(server, s3_port, first=not self._started)
            self._started = True
            sides = [svc.ready(), self._weed.ready()]
            if n % 2 == 0:
                sides.reverse()
            out = self._measure(server, sides, f"s3api/{n}/", size, min(seconds, SMALL_SECONDS))
        finally:
            server.stop()
        try:
            return out | self._two_workers(n, min(seconds, SMALL_SECONDS), out)
        except Exception as exc:  # an extra row: the round's other figures still count
            print(f"  warning: s3api with WORKERS=2 failed: {type(exc).__name__}: {exc}")
            return out

    def _two_workers(self, n: int, seconds: float, measured: dict[str, float]) -> dict[str, float]:
        """The 4 KiB rows again with WORKERS=2 (a fresh server and data dir), set against
        the SeaweedFS figures of the same round, as the REST rows of `workers` are."""
        s3_port = free_port()
        data_dir = self._data_dir.with_name(f"server-s3api-2w-{n}")
        server = Server(data_dir, self._log, service_env(s3_port) | {"WORKERS": "2"})
        try:
            svc = service_endpoint(server, s3_port, first=True).ready()
            settle_writeback()
            loads = small_objects("obstore", svc, f"s3api/{n}/small-2w/", seconds)
        finally:
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
        out: dict[str, float] = {}
        for op, load in loads.items():
            tag, weed = f"s3api_small_{op}_obstore_2w", f"s3api_small_{op}_obstore_weed"
            summary = load.summary()
            out |= {
                f"{tag}_svc": load.per_second,
                f"{tag}_svc_p50_ms": summary["p50_ms"],
                f"{tag}_svc_p99_ms": summary["p99_ms"],
            }
            out |= {f"{tag}_weed{x}": measured[f"{weed}{x}"] for x in ("", "_p50_ms", "_p99_ms")}
            if load.errors:
                print(f"  warning: {tag}: {load.errors} failed, first: {load.first_error}")
        return out

    def _measure(
        self, server: Server, sides: list[Endpoint], prefix: str, size: int, seconds: float
    ) -> dict[str, float]:
        out = {"s3api_rss_idle": server.status_kib("VmRSS") / 1024}
        with RssSampler(server) as sampler:
            for driver in DRIVERS:
                for endpoint in sides:
                    key = f"{prefix}big-{driver}.bin"
                    tag = f"{driver}_{endpoint.side}"
                    out[f"s3api_put_{tag}"] = size / big_put(driver, endpoint, key, size) / 1e6
                    out[f"s3api_get_{tag}"] = size / big_get(driver, endpoint, key, size) / 1e6
                    endpoint.s3.delete_object(Bucket=BUCKET, Key=key)
        out["s3api_rss_peak"] = server.status_kib("VmHWM") / 1024
        out["s3api_rss_sampled"] = sampler.peak_kib / 1024

        for driver in DRIVERS:
            for endpoint in sides:
                settle_writeback()
                loads = small_objects(driver, endpoint, f"{prefix}small-{driver}/", seconds)
                for op, load in loads.items():
                    tag = f"s3api_small_{op}_{driver}_{endpoint.side}"
                    summary = load.summary()
                    out[tag] = load.per_second
                    out[f"{tag}_p50_ms"] = summary["p50_ms"]
                    out[f"{tag}_p99_ms"] = summary["p99_ms"]
                    if load.errors:
                        print(f"  warning: {tag}: {load.errors} failed, first: {load.first_error}")

        if not self._listed:
            for endpoint in sides:
                start = time.perf_counter()
                create_keys(endpoint, LIST_PREFIX, LIST_KEYS)
                spent = time.perf_counter() - start
                print(
                    f"  s3api: {LIST_KEYS:,} keys made on {SIDES[endpoint.side]} in {spent:.0f} s"
                )
            self._listed = True
        for driver in DRIVERS:
            for endpoint in sides:
                out[f"s3api_list_{driver}_{endpoint.side}"] = list_keys(driver, endpoint)
        return out


# --- the report ---------------------------------------------------------------------------------

# (label, unit, key without its side, floor of service/SeaweedFS or None: for reading only).
# A rate's floor is a minimum (">="), a time's (the listing) a maximum ("<="); both are
# judged on the median of the per-round ratios, as run.py's targets. The floors are
# issue 11's where it sets them (its rows "for the S3 API": against SeaweedFS driven
# with obstore), else issue 12's (boto3's big objects).
BIG_FLOOR = {"obstore": 1.2, "boto3": 1.0}
SMALL_FLOOR = {"put": 0.5, "get": 0.7, "head": 0.7}  # obstore; boto3's for reading only
P99_CAP = 3.0  # a 4 KiB row's p99 at most 3x SeaweedFS's (issue 11), where it has a floor
ROWS: list[tuple[str, str, str, float | None]] = [
    *(
        (f"{{big}} {op.upper()}, {driver}", "MB/s", f"s3api_{op}_{driver}", BIG_FLOOR[driver])
        for driver in DRIVERS
        for op in ("put", "get")
    ),
    *(
        (
            f"4 KiB {op.upper()}, {driver}, {CLIENTS} clients",
            "ops/s",
            f"s3api_small_{op}_{driver}",
            SMALL_FLOOR[op] if driver == "obstore" else None,
        )
        for driver in DRIVERS
        for op in SMALL_OPS
    ),
    *(
        (
            f"4 KiB {op.upper()}, obstore, {CLIENTS} clients, 2 wkr",
            "ops/s",
            f"s3api_small_{op}_obstore_2w",
            SMALL_FLOOR[op],
        )
        for op in SMALL_OPS
    ),
    *(
        (f"list {LIST_KEYS:,} keys, {driver}", "s", f"s3api_list_{driver}", 1.0)
        for driver in DRIVERS
    ),
]
RSS_CAP = 150.0  # MiB, the service's VmHWM, judged on the worst round


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:,.0f}"


def _row(label: str, *cells: str) -> str:
    return f"{label:34}" + "".join(f"{c:>12}" for c in cells)


def _median(rounds: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in rounds if key in r]
    return statistics.median(values) if values else None


def report(rounds: list[dict[str, float]], size: int) -> dict[str, Any]:
    """Service and SeaweedFS side by side (medians), the ratio, the issue's floor."""
    results: dict[str, Any] = {"rows": [], "targets": []}
    peaks = [r["s3api_rss_peak"] for r in rounds if "s3api_rss_peak" in r]
    if not peaks:
        return results
    big = f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:g} MiB"
    print(f"\nS3 API ({len(rounds)} rounds; medians; ratio: service / SeaweedFS, per round)")
    print(_row("measurement", "unit", "service", "SeaweedFS", "ratio", "floor", "result"))
    for label, unit, key, floor in ROWS:
        label = label.format(big=big)
        ratios = [r[f"{key}_svc"] / r[f"{key}_weed"] for r in rounds if f"{key}_svc" in r]
        svc, weed = _median(rounds, f"{key}_svc"), _median(rounds, f"{key}_weed")
        if not ratios or svc is None or weed is None:
            continue
        ratio = statistics.median(ratios)
        entry: dict[str, Any] = {
            "what": label,
            "unit": unit,
            "service": svc,
            "seaweedfs": weed,
            "ratio": ratio,
            "ratios": ratios,
        }
        op = "<=" if unit == "s" else ">="
        goal = result = ""
        if floor is not None:
            goal = f"{op} {floor:g}x"
            result = "PASS" if (ratio <= floor if op == "<=" else ratio >= floor) else "MISS"
            entry |= {"op": op, "target": floor, "result": result}
        print(_row(label, unit, _fmt(svc), _fmt(weed), f"{ratio:.2f}x", goal, result))
        if unit == "ops/s":
            cells = []
            for side in SIDES:
                p50 = _median(rounds, f"{key}_{side}_p50_ms") or 0.0
                p99 = _median(rounds, f"{key}_{side}_p99_ms") or 0.0
                entry |= {f"p50_ms_{side}": p50, f"p99_ms_{side}": p99}
                cells.append(f"{p50:.1f}/{p99:.0f}")
            if floor is None:
                print(_row("  latency p50/p99", "ms", *cells))
            else:
                p99s = [
                    r[f"{key}_svc_p99_ms"] / r[f"{key}_weed_p99_ms"]
                    for r in rounds
                    if r.get(f"{key}_weed_p99_ms")
                ]
                p99 = statistics.median(p99s) if p99s else math.inf
                verdict = "PASS" if p99 <= P99_CAP else "MISS"
                entry |= {"p99_ratio": p99, "p99_ratios": p99s, "p99_result": verdict}
                cells += [f"p99 {p99:.2f}x", f"<= {P99_CAP:g}x", verdict]
                print(_row("  latency p50/p99", "ms", *cells))
        results["rows"].append(entry)
        if floor is not None:
            results["targets"].append(entry)
    if (idle := _median(rounds, "s3api_rss_idle")) is not None:
        print(_row("service RSS after start", "MiB", _fmt(idle)))
    worst = max(peaks)
    result = "PASS" if worst <= RSS_CAP else "MISS"
    label = f"service peak RSS, {big} moves"
    print(_row(label, "MiB", _fmt(worst), "", "", f"<= {RSS_CAP:g}", result))
    rss = {"what": label, "unit": "MiB", "values": peaks, "max": worst, "op": "<="}
    results["targets"].append(rss | {"target": RSS_CAP, "result": result})
    return results
