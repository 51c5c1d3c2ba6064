"""Concurrent writers and readers on one key, against a real server process.

(a) 16 clients upload distinct payloads to one key at once: all 16 become versions with
    distinct file_ids, each holding its own bytes, and exactly one is latest, whole.
    On SQLite and on PostgreSQL.
(b) Readers loop GET on a key while writers overwrite it and a deleter deletes and
    restores it: every read is a clean 404 NoSuchKey or one written payload, whole.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServerFactory
from tests.server.helpers import md5, multipart_body, sha256

pytestmark = pytest.mark.server

BUCKET = "artifacts"
KiB = 1024
MiB = 1024 * KiB
ENV = {"MAX_FILE_SIZE": "64MB", "GC_INTERVAL_SECONDS": "0", "ORPHAN_GRACE_SECONDS": "3600"}

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _distinct_payloads(rng: random.Random, n: int, low: int, high: int) -> list[bytes]:
    sizes = rng.sample(range(low, high), n)  # distinct sizes: a mix would show in the length
    return [rng.randbytes(size) for size in sizes]


def _upload(client: httpx.Client, key: str, payload: bytes, *, form: bool) -> httpx.Response:
    if not form:
        return client.put(
            f"/api/v1/objects/{BUCKET}/{key}",
            content=payload,
            headers={"X-Checksum-SHA256": sha256(payload)},
        )
    content_type, body = multipart_body(
        {"bucket": BUCKET, "key": key}, "weights.bin", iter([payload])
    )
    return client.post("/api/v1/upload", content=body, headers={"Content-Type": content_type})


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_uploads_to_one_key_keep_every_version_and_one_whole_latest(
    backend: str, make_server: ServerFactory, request: pytest.FixtureRequest
) -> None:
    env = dict(ENV)
    if backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_database")
    server = make_server(env)
    key = "race/one-key.bin"
    clients = 16
    payloads = _distinct_payloads(random.Random(1), clients, 256 * KiB, 2 * MiB)
    barrier = threading.Barrier(clients)
    responses: list[httpx.Response | BaseException | None] = [None] * clients

    def run(i: int) -> None:
        with server.client() as client:
            client.get("/health")  # connected before the barrier, so the bodies overlap
            barrier.wait(timeout=20)
            try:
                responses[i] = _upload(client, key, payloads[i], form=i % 2 == 1)
            except BaseException as exc:
                responses[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    file_id_of: dict[str, int] = {}
    for i, response in enumerate(responses):
        assert isinstance(response, httpx.Response), f"upload {i}: {response!r}"
        assert response.status_code == 200, f"upload {i}: {response.text}\n{server.log_tail()}"
        body = response.json()
        assert body["sha256"] == sha256(payloads[i]) and body["size"] == len(payloads[i])
        assert body["etag"] == md5(payloads[i])
        file_id_of[body["file_id"]] = i
    assert len(file_id_of) == clients, "two uploads were given the same file_id"

    with server.client() as client:
        listing = client.get(f"/api/v1/versions/{BUCKET}/{key}")
        assert listing.status_code == 200, listing.text
        versions: list[dict[str, Any]] = listing.json()["versions"]
        assert len(versions) == clients
        assert {v["file_id"] for v in versions} == set(file_id_of)
        assert [v["is_latest"] for v in versions] == [True] + [False] * (clients - 1)
        for v in versions:
            payload = payloads[file_id_of[v["file_id"]]]
            assert (v["sha256"], v["size"]) == (sha256(payload), len(payload))
            got = client.get(
                f"/api/v1/download/{BUCKET}/{key}", params={"version_id": v["file_id"]}
            )
            assert got.status_code == 200 and got.content == payload

        latest = client.get(f"/api/v1/download/{BUCKET}/{key}")
        assert latest.status_code == 200, latest.text
        assert latest.content in payloads
        winner = versions[0]
        assert latest.headers["x-file-id"] == winner["file_id"]
        assert latest.content == payloads[file_id_of[winner["file_id"]]]
        assert latest.headers["x-checksum-sha256"] == sha256(latest.content)

        objects = client.get(f"/api/v1/list/{BUCKET}", params={"prefix": "race/"}).json()
        assert [(o["key"], o["file_id"]) for o in objects["objects"]] == [(key, winner["file_id"])]


def _check_read(response: httpx.Response, by_sha: dict[str, bytes]) -> str:
    """One read: a clean 404 NoSuchKey or one whole payload; returns "404" or the sha256."""
    if response.status_code == 404:
        assert response.json()["code"] == "NoSuchKey", response.text
        return "404"
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    data = response.content
    declared = response.headers["x-checksum-sha256"]
    assert int(response.headers["content-length"]) == len(data)
    assert sha256(data) == declared, "the body is not the version the headers describe"
    assert declared in by_sha, "bytes that nobody wrote"
    assert data == by_sha[declared]
    assert response.headers["etag"] == f'"{md5(data)}"'
    return declared


def test_reads_during_overwrite_and_delete_see_whole_versions_or_404(
    make_server: ServerFactory,
) -> None:
    server = make_server(ENV)
    key = "race/read-while-writing.bin"
    payloads = _distinct_payloads(random.Random(2), 8, 256 * KiB, 1536 * KiB)
    by_sha = {sha256(p): p for p in payloads}
    duration = 3.0
    stop = threading.Event()
    failures: list[str] = []
    outcomes: Counter[str] = Counter()
    writes = Counter[str]()
    deletes = Counter[str]()
    lock = threading.Lock()

    with server.client() as client:
        assert _upload(client, key, payloads[0], form=False).status_code == 200

    def guarded(name: str, body: Any) -> Any:
        def run() -> None:
            try:
                with server.client() as client:
                    body(client)
            except BaseException as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                stop.set()

        return threading.Thread(target=run, name=name)

    def reader(client: httpx.Client) -> None:
        while not stop.is_set():
            seen = _check_read(client.get(f"/api/v1/download/{BUCKET}/{key}"), by_sha)
            with lock:
                outcomes["404" if seen == "404" else "200"] += 1
                outcomes[seen] += 1

    def writer(seed: int) -> Any:
        rng = random.Random(seed)

        def loop(client: httpx.Client) -> None:
            while not stop.is_set():
                i = rng.randrange(len(payloads))
                response = _upload(client, key, payloads[i], form=rng.random() < 0.3)
                assert response.status_code == 200, response.text
                assert response.json()["sha256"] == sha256(payloads[i])
                with lock:
                    writes["ok"] += 1
                time.sleep(rng.uniform(0.01, 0.05))

        return loop

    def deleter(client: httpx.Client) -> None:
        rng = random.Random(3)
        while not stop.is_set():
            gone = client.delete(f"/api/v1/delete/{BUCKET}/{key}")
            assert gone.status_code == 200, gone.text  # the key was restored just before
            deletes["200"] += 1
            time.sleep(rng.uniform(0.02, 0.06))
            back = client.post(f"/api/v1/restore/{BUCKET}/{key}")
            assert back.status_code == 200, back.text
            assert back.json()["sha256"] in by_sha
            deletes["restored"] += 1
            time.sleep(rng.uniform(0.0, 0.03))

    threads = [guarded(f"reader-{i}", reader) for i in range(4)]
    threads += [guarded(f"writer-{i}", writer(10 + i)) for i in range(2)]
    threads.append(guarded("deleter", deleter))

    def covered() -> bool:
        with lock:
            return (
                outcomes["200"] >= 20
                and outcomes["404"] >= 3
                and len([s for s in outcomes if s in by_sha]) >= 3
                and writes["ok"] >= 10
                and deletes["restored"] >= 5
            )

    for t in threads:
        t.start()
    # At least `duration`, then until the run has covered what it claims to test (on a
    # loaded machine that takes longer), within a bound.
    started = time.monotonic()
    while not stop.wait(0.2):
        elapsed = time.monotonic() - started
        if (elapsed >= duration and covered()) or elapsed >= 6 * duration:
            break
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), f"{t.name} is stuck"

    assert not failures, f"{failures[:5]}\n{server.log_tail()}"
    # The run exercised what it claims: whole reads, 404s while deleted, many versions.
    assert outcomes["200"] >= 20 and outcomes["404"] >= 3, outcomes
    assert len([s for s in outcomes if s in by_sha]) >= 3, outcomes
    assert writes["ok"] >= 10 and deletes["200"] >= 5 and deletes["restored"] >= 5, (
        writes,
        deletes,
    )
