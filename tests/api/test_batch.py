"""Batch operations: per-file upload results, batch delete, server-side copy, jobs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from tests.api.conftest import assert_error, stored_files
from tests.api.test_access import bearer, new_token
from tfstorage.config import Settings
from tfstorage.index.jobs import JobIndex
from tfstorage.index.tables import batch_jobs, blobs

pytestmark = pytest.mark.anyio

UPLOAD = "/api/v1/files/upload"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def keys_in(client: httpx.AsyncClient, bucket: str, prefix: str = "") -> list[str]:
    r = await client.get(f"/api/v1/list/{bucket}", params={"prefix": prefix, "limit": 1000})
    assert r.status_code == 200, r.text
    return [o["key"] for o in r.json()["objects"]]


async def put(client: httpx.AsyncClient, bucket: str, key: str, data: bytes) -> str:
    r = await client.put(f"/api/v1/objects/{bucket}/{key}", content=data)
    assert r.status_code == 200, r.text
    return str(r.json()["file_id"])


def refcounts(app: FastAPI) -> dict[str, int]:
    """sha256 -> refcount, straight from the index."""
    engine = app.state.storage.ctx.index.engine
    with engine.connect() as conn:
        return {row.sha256: row.refcount for row in conn.execute(select(blobs))}


# per-file upload results ---------------------------------------------------------------
async def test_good_files_stored_bad_ones_reported_and_absent(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    r = await client.post(
        UPLOAD,
        files=[
            ("file", ("a.csv", b"1,2")),
            ("file", ("..", b"name")),  # no usable key
            ("file", ("evil.exe", b"type")),  # datasets refuses .exe
            ("file", ("c.csv", b"5,6", "text/csv", {"X-Checksum-SHA256": "0" * 64})),
            ("file", ("d.csv", b"7,8", "text/csv", {"X-Checksum-SHA256": sha256(b"7,8")})),
        ],
        data={"bucket": "datasets", "prefix": "mix"},
    )
    assert r.status_code == 207, r.text
    body = r.json()
    assert (body["succeeded"], body["failed"]) == (2, 3)
    assert body["count"] == 2 and [f["key"] for f in body["files"]] == ["mix/a.csv", "mix/d.csv"]
    results = body["results"]
    assert [x["filename"] for x in results] == ["a.csv", "..", "evil.exe", "c.csv", "d.csv"]
    assert [x["status"] for x in results] == [201, 400, 415, 400, 201]
    codes = [x["error"] and x["error"]["code"] for x in results]
    assert codes == [None, "InvalidObjectName", "UnsupportedFileType", "BadDigest", None]
    assert all(isinstance(x["error"]["error"], str) for x in results if x["error"])
    assert results[2]["key"] == "mix/evil.exe" and results[3]["key"] == "mix/c.csv"
    stored = results[4]["file"]
    assert stored["key"] == "mix/d.csv" and stored["sha256"] == sha256(b"7,8")
    assert results[1]["file"] is None and results[0]["file"]["size"] == 3
    # The refused files left nothing: not in the index, not in the blob store.
    assert await keys_in(client, "datasets", "mix/") == ["mix/a.csv", "mix/d.csv"]
    assert len(stored_files(settings)) == 2
    got = await client.get("/api/v1/download/datasets/mix/d.csv")
    assert got.content == b"7,8"


async def test_every_file_refused_answers_with_the_first_error(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    r = await client.post(
        UPLOAD,
        files=[
            ("file", ("x.exe", b"1")),
            ("file", ("y.csv", b"2", "text/csv", {"Content-MD5": "bad"})),
        ],
        data={"bucket": "datasets"},
    )
    assert_error(r, 415, "UnsupportedFileType")
    body = r.json()
    assert (body["succeeded"], body["failed"]) == (0, 2)
    assert [x["error"]["code"] for x in body["results"]] == ["UnsupportedFileType", "InvalidDigest"]
    assert stored_files(settings) == []


async def test_atomic_keeps_all_or_nothing(client: httpx.AsyncClient, settings: Settings) -> None:
    files = [("file", ("ok.csv", b"1")), ("file", ("bad.exe", b"2"))]
    r = await client.post(
        UPLOAD, files=files, params={"atomic": "true"}, data={"bucket": "datasets"}
    )
    assert_error(r, 415, "UnsupportedFileType")
    assert await keys_in(client, "datasets") == []
    assert stored_files(settings) == []


async def test_request_level_errors_still_fail_the_whole_request(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, settings: Settings
) -> None:
    files = [("file", ("a.csv", b"1")), ("file", ("b.csv", b"2"))]
    assert_error(
        await client.post(UPLOAD, files=files, data={"bucket": "nobucket"}), 404, "NoSuchBucket"
    )
    assert_error(
        await anon.post(UPLOAD, files=files, data={"bucket": "datasets"}), 401, "Unauthenticated"
    )
    r = await client.post(UPLOAD, files=files, data={"bucket": "datasets", "metadata": "{bad"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidMetadata"
    assert stored_files(settings) == []
    assert await keys_in(client, "datasets") == []


async def test_prefix_token_gets_per_file_403(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    token = await new_token(client, scopes=["write", "read"], buckets=["datasets"], prefix="run1/")
    r = await anon.post(
        UPLOAD,
        files=[("file", ("a.csv", b"1")), ("file", ("b.csv", b"2"))],
        data={"bucket": "datasets", "prefix": "run1"},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.text
    r = await anon.post(
        UPLOAD,
        files=[("file", ("a.csv", b"1"))],
        data={"bucket": "datasets", "key": "other/a.csv"},
        headers=bearer(token),
    )
    assert_error(r, 403, "AccessDenied")
    assert await keys_in(client, "datasets") == ["run1/a.csv", "run1/b.csv"]


async def test_a_file_over_the_size_limit_is_refused_alone(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    big = b"z" * (settings.max_file_size + 1)
    r = await client.post(
        UPLOAD,
        files=[
            ("file", ("a.bin", b"small")),
            ("file", ("big.bin", big)),
            ("file", ("c.bin", b"c")),
        ],
        data={"bucket": "artifacts"},
    )
    assert r.status_code == 207, r.text
    assert [x["status"] for x in r.json()["results"]] == [201, 413, 201]
    assert r.json()["results"][1]["error"]["code"] == "EntityTooLarge"
    assert await keys_in(client, "artifacts") == ["a.bin", "c.bin"]
    assert len(stored_files(settings)) == 2


async def test_a_hundred_small_files_in_one_request(client: httpx.AsyncClient) -> None:
    files = [("file", (f"f{i:03}.bin", bytes([i]) * 4096)) for i in range(100)]
    r = await client.post(UPLOAD, files=files, data={"bucket": "artifacts", "prefix": "many"})
    assert r.status_code == 201, r.text
    assert r.json()["succeeded"] == 100
    assert len(await keys_in(client, "artifacts", "many/")) == 100


# batch delete --------------------------------------------------------------------------
async def test_batch_delete_by_keys_reports_each_key_and_is_restorable(
    client: httpx.AsyncClient,
) -> None:
    for k in ("k/a.bin", "k/b.bin", "k/c.bin"):
        await put(client, "artifacts", k, k.encode())
    r = await client.post(
        "/api/v1/batch/delete",
        json={"bucket": "artifacts", "keys": ["k/a.bin", "k/missing.bin", "k/c.bin", "../x"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["job_id"] and (body["deleted"], body["failed"]) == (2, 2)
    assert [x["key"] for x in body["results"]] == ["k/a.bin", "k/missing.bin", "k/c.bin", "../x"]
    assert [x["status"] for x in body["results"]] == [200, 404, 200, 400]
    assert body["results"][1]["error"]["code"] == "NoSuchKey"
    assert await keys_in(client, "artifacts") == ["k/b.bin"]
    audit = (await client.get("/api/v1/audit", params={"bucket": "artifacts"})).json()["entries"]
    deletes = sorted((e["action"], e["key"] or "") for e in audit if e["action"] != "upload")
    assert deletes == [("batch_delete", ""), ("delete", "k/a.bin"), ("delete", "k/c.bin")]
    r = await client.post("/api/v1/restore/artifacts/k/a.bin")
    assert r.status_code == 200, r.text
    assert await keys_in(client, "artifacts") == ["k/a.bin", "k/b.bin"]


async def test_batch_delete_by_prefix(client: httpx.AsyncClient) -> None:
    for i in range(30):
        await put(client, "artifacts", f"p/{i:02}.bin", b"x" * i)
    await put(client, "artifacts", "q/keep.bin", b"keep")
    r = await client.post("/api/v1/batch/delete", json={"bucket": "artifacts", "prefix": "p/"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["deleted"], body["failed"], body["bytes"]) == (30, 0, sum(range(30)))
    assert len(body["results"]) == 30 and body["results_truncated"] is False
    assert await keys_in(client, "artifacts") == ["q/keep.bin"]


@pytest.mark.parametrize(
    "body",
    [
        {"bucket": "artifacts"},
        {"bucket": "artifacts", "keys": ["a"], "prefix": "p/"},
        {"bucket": "artifacts", "keys": []},
        {"bucket": "artifacts", "keys": [f"k{i}" for i in range(1001)]},
        {"bucket": "artifacts", "prefix": "../"},
    ],
)
async def test_bad_batch_delete_requests(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    r = await client.post("/api/v1/batch/delete", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] in ("InvalidArgument", "InvalidObjectName")


async def test_batch_delete_rights(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    await put(client, "artifacts", "run1/a.bin", b"1")
    await put(client, "artifacts", "run2/b.bin", b"2")
    body = {"bucket": "artifacts", "keys": ["run1/a.bin", "run2/b.bin"]}
    reader = await new_token(client, scopes=["read"], buckets=["artifacts"])
    r = await anon.post("/api/v1/batch/delete", json=body, headers=bearer(reader))
    assert_error(r, 403, "AccessDenied")
    confined = await new_token(client, scopes=["delete"], buckets=["artifacts"], prefix="run1/")
    r = await anon.post("/api/v1/batch/delete", json=body, headers=bearer(confined))
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == [200, 403]
    r = await anon.post(
        "/api/v1/batch/delete",
        json={"bucket": "artifacts", "prefix": "run2/"},
        headers=bearer(confined),
    )
    assert_error(r, 403, "AccessDenied")
    assert await keys_in(client, "artifacts") == ["run2/b.bin"]


# copy ----------------------------------------------------------------------------------
async def test_copy_shares_blobs_and_counts_references(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    datas = {f"src/{i}.bin": f"payload {i}".encode() * 50 for i in range(5)}
    ids = {k: await put(client, "artifacts", k, v) for k, v in datas.items()}
    await put(client, "artifacts", "other/x.bin", b"not copied")
    assert (await client.post("/api/v1/buckets", json={"name": "copies"})).status_code == 201
    files_before = stored_files(settings)
    r = await client.post(
        "/api/v1/batch/copy",
        json={
            "bucket": "artifacts",
            "prefix": "src/",
            "dest_bucket": "copies",
            "dest_prefix": "c/",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["copied"], body["failed"], body["skipped"]) == (5, 0, 0)
    assert body["bytes"] == sum(len(v) for v in datas.values())
    assert stored_files(settings) == files_before  # no byte was copied
    counts = refcounts(app)
    assert all(counts[sha256(v)] == 2 for v in datas.values())
    assert await keys_in(client, "copies") == [f"c/{i}.bin" for i in range(5)]
    # The copies stand on their own once the sources are gone for good.
    for file_id in ids.values():
        assert (await client.delete(f"/api/v1/files/{file_id}")).status_code == 200
    assert all(refcounts(app)[sha256(v)] == 1 for v in datas.values())
    for i in range(5):
        got = await client.get(f"/api/v1/download/copies/c/{i}.bin")
        assert got.content == datas[f"src/{i}.bin"]


async def test_copy_respects_destination_rules(client: httpx.AsyncClient) -> None:
    for name in ("a.csv", "b.csv", "c.bin", "d.csv"):
        await put(client, "artifacts", f"s/{name}", name.encode())
    r = await client.post(
        "/api/v1/buckets",
        json={"name": "strict", "allowed_types": ["csv"], "quota_objects": 2, "versioning": False},
    )
    assert r.status_code == 201, r.text
    await put(client, "strict", "d/a.csv", b"old")
    copy = {"bucket": "artifacts", "prefix": "s/", "dest_bucket": "strict", "dest_prefix": "d/"}
    r = await client.post("/api/v1/batch/copy", json={**copy, "overwrite": False})
    body = r.json()
    assert r.status_code == 200, r.text
    # a.csv exists (skipped), c.bin is refused by type, b.csv fits, d.csv breaks the quota.
    assert (body["copied"], body["skipped"], body["failed"]) == (1, 1, 2)
    codes = sorted(e["code"] for e in body["errors"])
    assert codes == ["QuotaExceeded", "UnsupportedFileType"]
    assert await keys_in(client, "strict") == ["d/a.csv", "d/b.csv"]
    assert (await client.get("/api/v1/download/strict/d/a.csv")).content == b"old"
    # Overwriting an unversioned key keeps only the new version.
    r = await client.post(
        "/api/v1/batch/copy", json={**copy, "prefix": "s/a", "dest_prefix": "d/a"}
    )
    assert r.json()["copied"] == 1
    assert (await client.get("/api/v1/download/strict/d/a.csv")).content == b"a.csv"
    assert len((await client.get("/api/v1/versions/strict/d/a.csv")).json()["versions"]) == 1


async def test_copy_refusals(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    await put(client, "artifacts", "s/a.bin", b"a")
    r = await client.post(
        "/api/v1/batch/copy",
        json={
            "bucket": "artifacts",
            "prefix": "s/",
            "dest_bucket": "artifacts",
            "dest_prefix": "s/t/",
        },
    )
    assert_error(r, 400, "InvalidArgument")  # would copy its own copies for ever
    r = await client.post(
        "/api/v1/batch/copy",
        json={"bucket": "artifacts", "prefix": "s/", "dest_bucket": "nobucket", "dest_prefix": ""},
    )
    assert_error(r, 404, "NoSuchBucket")
    reader = await new_token(client, scopes=["read"], buckets=["artifacts", "models"])
    r = await anon.post(
        "/api/v1/batch/copy",
        json={"bucket": "artifacts", "prefix": "s/", "dest_bucket": "models", "dest_prefix": ""},
        headers=bearer(reader),
    )
    assert_error(r, 403, "AccessDenied")
    writer = await new_token(client, scopes=["write"], buckets=["models"])
    r = await anon.post(
        "/api/v1/batch/copy",
        json={"bucket": "artifacts", "prefix": "s/", "dest_bucket": "models", "dest_prefix": ""},
        headers=bearer(writer),
    )
    assert_error(r, 403, "AccessDenied")
    assert await keys_in(client, "models") == []


# jobs ----------------------------------------------------------------------------------
async def wait_for(client: httpx.AsyncClient, job_id: str) -> dict[str, object]:
    for _ in range(500):
        r = await client.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["state"] != "running":
            return dict(r.json())
        await anyio.sleep(0.02)
    raise AssertionError("the job never finished")


async def test_jobs_in_the_background(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    for i in range(40):
        await put(client, "artifacts", f"j/{i:02}.bin", b"y" * 10)
    r = await client.post(
        "/api/v1/batch/copy",
        params={"wait": "false"},
        json={
            "bucket": "artifacts",
            "prefix": "j/",
            "dest_bucket": "artifacts",
            "dest_prefix": "k/",
        },
    )
    assert r.status_code == 202, r.text
    job = await wait_for(client, r.json()["job_id"])
    assert job["kind"] == "copy" and job["state"] == "succeeded"
    assert (job["done"], job["total"], job["bytes"], job["failed"]) == (40, 40, 400, 0)
    assert job["finished_at"] and job["created_at"] and job["updated_at"]

    r = await client.post(
        "/api/v1/batch/delete",
        params={"wait": "false"},
        json={"bucket": "artifacts", "keys": [f"k/{i:02}.bin" for i in range(40)] + ["k/no"]},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = await wait_for(client, job_id)
    assert (job["kind"], job["state"], job["done"], job["total"]) == ("delete", "succeeded", 40, 41)
    assert job["failed"] == 1 and job["errors"][0]["code"] == "NoSuchKey"
    assert len(await keys_in(client, "artifacts", "k/")) == 0

    # Only the creator or an admin reads a job.
    other = await new_token(client, scopes=["read", "write", "delete"])
    assert_error(await anon.get(f"/api/v1/jobs/{job_id}", headers=bearer(other)), 404, "NoSuchJob")
    assert_error(await anon.get(f"/api/v1/jobs/{job_id}"), 401, "Unauthenticated")
    r = await anon.post(
        "/api/v1/batch/delete",
        params={"wait": "false"},
        json={"bucket": "artifacts", "prefix": "j/0"},
        headers=bearer(other),
    )
    mine = r.json()["job_id"]
    assert (await wait_for(client, mine))["done"] == 10  # the admin reads anyone's
    assert (await anon.get(f"/api/v1/jobs/{mine}", headers=bearer(other))).status_code == 200


async def test_a_job_whose_instance_died_is_reported_failed(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    engine = app.state.storage.ctx.index.engine
    jobs = JobIndex(engine)
    job = jobs.create_job(kind="copy", owner="admin (ADMIN_TOKEN)", token_id=None, params={})
    fresh = (await client.get(f"/api/v1/jobs/{job.job_id}")).json()
    assert fresh["state"] == "running"
    with engine.begin() as conn:
        long_ago = datetime.now(UTC) - timedelta(minutes=5)
        conn.execute(
            update(batch_jobs).where(batch_jobs.c.job_id == job.job_id).values(updated_at=long_ago)
        )
    stale = (await client.get(f"/api/v1/jobs/{job.job_id}")).json()
    assert stale["state"] == "failed" and stale["errors"][-1]["code"] == "JobLost"
