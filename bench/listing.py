"""Paged listing of 10,000 keys: the S3 ListObjectsV2 and the REST list, against SeaweedFS.

    .venv/bin/python bench/listing.py                      # SQLite index, SeaweedFS too
    .venv/bin/python bench/listing.py --no-seaweed --profile s3   # where the S3 listing's time goes
    .venv/bin/python bench/listing.py --postgres postgresql://postgres@127.0.0.1/postgres

A fresh `tfstorage serve` (local disk, its S3 endpoint on a free port) gets `--keys`
one-byte objects under one prefix (8 obstore clients, not timed), and so does SeaweedFS
(`weed server -s3`, as bench/seaweed.py starts it). Then, `--rounds` times back to back,
the order reversed every other round: boto3's ListObjectsV2 paginator over the prefix,
`--page` keys a page, to the end ("s3"); the same requests signed by botocore, sent by
httpx and read with ElementTree ("raw": the server's share, without boto3 turning every
entry into a dict); and the service's REST `GET /api/v1/list/{bucket}` paged by `marker`
with httpx ("rest"). Medians in seconds, and service / SeaweedFS.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import s3api
import seaweed
from service import Server, free_port, recording, summarize

BUCKET = s3api.BUCKET
PREFIX = "list/"


def list_s3(endpoint: s3api.Endpoint, keys: int, page: int) -> float:
    start = time.perf_counter()
    paginator = endpoint.s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=BUCKET, Prefix=PREFIX, PaginationConfig={"PageSize": page})
    found = sum(p.get("KeyCount", 0) for p in pages)
    elapsed = time.perf_counter() - start
    if found != keys:
        raise RuntimeError(f"ListObjectsV2 on {endpoint.side} found {found} keys, not {keys}")
    return elapsed


def list_raw(endpoint: s3api.Endpoint, client: httpx.Client, keys: int, page: int) -> float:
    """ListObjectsV2 signed by botocore, sent by httpx, parsed by ElementTree: what the
    server costs, without boto3's parsing of every entry into dicts."""
    from xml.etree import ElementTree

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signer = SigV4Auth(Credentials(endpoint.access_key, endpoint.secret_key), "s3", "us-east-1")
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
    start = time.perf_counter()
    found, token = 0, None
    while True:
        query = f"list-type=2&max-keys={page}&prefix={quote(PREFIX, safe='')}"
        if token is not None:
            query += f"&continuation-token={quote(token, safe='')}"
        request = AWSRequest("GET", f"{endpoint.url}/{BUCKET}?{query}")
        request.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        signer.add_auth(request)
        answer = client.get(request.url, headers=dict(request.headers.items()))
        root = ElementTree.fromstring(answer.raise_for_status().content)
        found += int(root.findtext(f"{ns}KeyCount") or 0)
        token = root.findtext(f"{ns}NextContinuationToken")
        if root.findtext(f"{ns}IsTruncated") != "true":
            break
    elapsed = time.perf_counter() - start
    if found != keys:
        raise RuntimeError(f"ListObjectsV2 (raw) on {endpoint.side} found {found} keys, not {keys}")
    return elapsed


def list_rest(client: httpx.Client, keys: int, page: int) -> float:
    start = time.perf_counter()
    found, marker = 0, ""
    while True:
        params = {"prefix": PREFIX, "limit": str(page), "marker": marker}
        body = client.get(f"/api/v1/list/{BUCKET}", params=params).raise_for_status().json()
        found += len(body["objects"])
        if not body["truncated"]:
            break
        marker = body["next_marker"]
    elapsed = time.perf_counter() - start
    if found != keys:
        raise RuntimeError(f"the REST list found {found} keys, not {keys}")
    return elapsed


@contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A throwaway database on the server at `url`, dropped at the end."""
    admin = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    admin = admin.execution_options(isolation_level="AUTOCOMMIT")
    name = f"tfs_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            make_url(url)
            .set(database=name, drivername="postgresql+psycopg")
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", metavar="URL", help="the index in a fresh database there")
    parser.add_argument("--no-seaweed", action="store_true", help="the service alone")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the service's DATA_DIR, kept: a second run reuses its keys (SQLite only)",
    )
    parser.add_argument(
        "--profile", choices=("s3", "raw", "rest"), help="py-spy the server during that listing"
    )
    args = parser.parse_args()

    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="tfs-bench-listing-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        log = stack.enter_context((root / "server.log").open("wb"))
        env = s3api.service_env(s3_port := free_port())
        if args.postgres:
            env["DATABASE_URL"] = stack.enter_context(postgres_database(args.postgres))
        data_dir = args.data_dir or root / "server"
        made = (data_dir / "admin.s3").exists()
        server = Server(data_dir, log, env)
        stack.callback(server.stop)
        svc = s3api.service_endpoint(server, s3_port, first=not made).ready()
        rest = stack.enter_context(
            httpx.Client(
                base_url=f"http://{server.host}:{server.port}",
                headers={"Authorization": f"Bearer {server.token}"},
                timeout=60,
            )
        )
        sides = [svc]
        if not args.no_seaweed:
            engine = stack.enter_context(seaweed.running(root / "weed"))
            sides.append(s3api.seaweed_endpoint(engine).ready())
        for endpoint in sides[1:] if made else sides:
            start = time.perf_counter()
            s3api.create_keys(endpoint, PREFIX, args.keys)
            spent = time.perf_counter() - start
            print(f"{args.keys:,} keys made on {s3api.SIDES[endpoint.side]} in {spent:.0f} s")

        runs: dict[str, Callable[[], float]] = {
            "rest_svc": lambda: list_rest(rest, args.keys, args.page)
        }
        raw = stack.enter_context(httpx.Client(timeout=60))
        for endpoint in sides:
            runs[f"s3_{endpoint.side}"] = lambda e=endpoint: list_s3(e, args.keys, args.page)  # type: ignore[misc]
            runs[f"raw_{endpoint.side}"] = lambda e=endpoint: list_raw(e, raw, args.keys, args.page)  # type: ignore[misc]
        for run in runs.values():
            run()  # warm: connections, the database's pages, the service's caches
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for n in range(args.rounds):
            for name in names if n % 2 == 0 else reversed(names):
                times[name].append(runs[name]())

        medians = {name: statistics.median(t) for name, t in times.items()}
        index = "PostgreSQL" if args.postgres else "SQLite"
        print(f"{args.keys:,} keys, {args.page} a page, median of {args.rounds}, index: {index}")
        for name, median in medians.items():
            spread = f"{min(times[name]):.3f}..{max(times[name]):.3f}"
            print(f"  {name:9} {median:7.3f} s  ({spread})")
        if "s3_weed" in medians:
            print(f"  S3 service / SeaweedFS, boto3: {medians['s3_svc'] / medians['s3_weed']:.2f}")
            print(
                f"  S3 service / SeaweedFS, raw:   {medians['raw_svc'] / medians['raw_weed']:.2f}"
            )

        if args.profile:
            out = root / "profile.txt"
            profiled = runs[f"{args.profile}_svc"]
            with recording(server.pid, out):
                for _ in range(args.rounds):
                    profiled()
            print(summarize(out, top=25))


if __name__ == "__main__":
    sys.exit(main())
