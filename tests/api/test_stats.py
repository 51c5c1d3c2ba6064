"""Storage analytics: per bucket, category, owner, the largest objects, dedup, the trash,
quota use, and the daily history (issue 6)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import assert_error
from tests.api.test_access import bearer, new_token

pytestmark = pytest.mark.anyio

WEIGHTS = b"w" * 5000  # stored twice under different keys: one blob


async def _put(client: httpx.AsyncClient, path: str, data: bytes, **headers: str) -> None:
    r = await client.put(f"/api/v1/objects/{path}", content=data, headers=headers)
    assert r.status_code == 200, r.text


async def _world(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/buckets", json={"name": "runs", "quota_bytes": 40_000, "quota_objects": 8}
    )
    assert r.status_code in (200, 201), r.text
    alice = bearer(await new_token(client, name="alice", scopes=["read", "write", "delete"]))
    bob = bearer(await new_token(client, name="bob", scopes=["read", "write"]))
    await _put(client, "models/resnet/v1/model.pt", WEIGHTS, **alice)  # a model
    await _put(client, "runs/job_1/model.pt", WEIGHTS, **alice)  # same bytes: dedup
    await _put(client, "runs/job_1/epoch_1.ckpt", b"c" * 3000, **bob)  # checkpoint
    await _put(client, "checkpoints/final.safetensors", b"s" * 2000, **bob)  # bucket hint
    await _put(client, "datasets/train.parquet", b"p" * 1000, **alice)
    await _put(client, "runs/table", b"a,b\n" * 100, **{"Content-Type": "text/csv", **bob})
    await _put(client, "artifacts/notes.txt", b"n" * 700, **alice)  # other
    # An overwrite leaves a non-current version; a delete puts a key in the trash.
    await _put(client, "runs/job_1/epoch_1.ckpt", b"C" * 3500, **bob)
    await _put(client, "artifacts/old.log", b"o" * 300, **alice)
    r = await client.delete("/api/v1/delete/artifacts/old.log", headers=alice)
    assert r.status_code in (200, 204), r.text


async def test_storage_stats_reports_usage_from_the_index(client: httpx.AsyncClient) -> None:
    await _world(client)
    r = await client.get("/api/v1/storage/stats", params={"top": 3})
    assert r.status_code == 200, r.text
    body = r.json()

    # The original fields are still there and agree with the new ones.
    assert body["total_objects"] == 7
    live = 5000 + 5000 + 3500 + 2000 + 1000 + 400 + 700
    assert body["total_size_bytes"] == live
    assert body["buckets"]["runs"]["size_bytes"] == 5000 + 3500 + 400
    runs = body["bucket_usage"]["runs"]
    assert (runs["objects"], runs["bytes"]) == (3, 5000 + 3500 + 400)
    assert (runs["versions"], runs["version_bytes"]) == (4, 5000 + 3000 + 3500 + 400)
    assert (runs["noncurrent_versions"], runs["noncurrent_bytes"]) == (1, 3000)
    assert runs["quota"] == {
        "bytes": 40_000,
        "objects": 8,
        "bytes_used_percent": round(100 * 8900 / 40_000, 1),
        "objects_used_percent": round(100 * 3 / 8, 1),
    }
    assert body["bucket_usage"]["models"]["quota"]["bytes_used_percent"] is None  # no quota
    artifacts = body["bucket_usage"]["artifacts"]
    assert (artifacts["trash_versions"], artifacts["trash_bytes"]) == (1, 300)
    assert artifacts["deleted_keys"] == 1
    assert body["trash"] == {"versions": 1, "bytes": 300, "keys": 1}
    assert body["noncurrent"] == {"versions": 1, "bytes": 3000}

    assert body["categories"] == {
        "datasets": {"objects": 2, "bytes": 1000 + 400},  # .parquet, and text/csv
        "models": {"objects": 2, "bytes": 5000 + 5000},  # .pt without a checkpoint hint
        # .ckpt, and .safetensors in a bucket named like checkpoints
        "checkpoints": {"objects": 2, "bytes": 3500 + 2000},
        "other": {"objects": 1, "bytes": 700},
    }
    assert body["owners"]["alice"] == {"versions": 5, "bytes": 5000 + 5000 + 1000 + 700 + 300}
    assert body["owners"]["bob"] == {"versions": 4, "bytes": 3000 + 2000 + 400 + 3500}

    assert [(o["bucket"], o["key"], o["size"]) for o in body["largest"]] == [
        ("runs", "job_1/model.pt", 5000),
        ("models", "resnet/v1/model.pt", 5000),
        ("runs", "job_1/epoch_1.ckpt", 3500),
    ]
    # Dedup: every version's bytes against the distinct blobs' bytes.
    logical = live - 3500 + 3000 + 3500 + 300
    assert body["dedup"]["logical_bytes"] == logical
    assert body["dedup"]["saved_bytes"] == 5000
    assert body["dedup"]["stored_bytes"] == logical - 5000
    assert body["versions"] == {"versions": 9, "bytes": logical}


async def test_stats_for_one_bucket(client: httpx.AsyncClient) -> None:
    await _world(client)
    body = (await client.get("/api/v1/storage/stats", params={"bucket": "runs"})).json()
    assert body["bucket"] == "runs" and list(body["buckets"]) == ["runs"]
    assert list(body["bucket_usage"]) == ["runs"]
    assert body["total_objects"] == 3
    assert {o["key"] for o in body["largest"]} == {"job_1/model.pt", "job_1/epoch_1.ckpt", "table"}
    assert set(body["owners"]) == {"alice", "bob"}
    assert_error(
        await client.get("/api/v1/storage/stats", params={"bucket": "nope"}), 404, "NoSuchBucket"
    )
    assert_error(
        await client.get("/api/v1/storage/stats", params={"top": 101}), 400, "InvalidArgument"
    )


async def test_history_is_one_row_per_day_refreshed_by_maintenance(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    storage = app.state.storage
    await _put(client, "artifacts/a.bin", b"1" * 100)
    await storage.run_maintenance()
    await _put(client, "artifacts/b.bin", b"2" * 50)
    await storage.run_maintenance()  # the same day again: the row is replaced
    body = (await client.get("/api/v1/storage/stats/history", params={"days": 7})).json()
    assert body["days"] == 7
    (today,) = body["history"]
    assert today["date"] == datetime.now(UTC).date().isoformat()
    assert (today["objects"], today["bytes"]) == (2, 150)
    assert today["buckets"]["artifacts"] == {
        "date": today["date"],
        "objects": 2,
        "bytes": 150,
        "versions": 2,
        "version_bytes": 150,
    }
    one = await client.get(
        "/api/v1/storage/stats/history", params={"days": 1, "bucket": "artifacts"}
    )
    assert [d["bytes"] for d in one.json()["history"]] == [150]
    for days in (0, 366, -1):
        r = await client.get("/api/v1/storage/stats/history", params={"days": days})
        assert_error(r, 400, "InvalidArgument")


async def test_stats_need_admin(client: httpx.AsyncClient) -> None:
    reader = bearer(await new_token(client, scopes=["read"]))
    for url in ("/api/v1/storage/stats", "/api/v1/storage/stats/history"):
        assert_error(await client.get(url, headers=reader), 403, "AccessDenied")


async def test_files_uploaded_together_are_categorized(client: httpx.AsyncClient) -> None:
    files = [
        ("file", ("a.parquet", b"p" * 10)),
        ("file", ("b.ckpt", b"c" * 20)),
        ("file", ("c.onnx", b"o" * 30)),
    ]
    r = await client.post("/api/v1/files/upload", files=files, data={"prefix": "together/"})
    assert r.status_code in (200, 201), r.text
    body = (await client.get("/api/v1/storage/stats")).json()
    categories = {name: c["objects"] for name, c in body["categories"].items()}
    assert categories == {"datasets": 1, "models": 1, "checkpoints": 1, "other": 0}


async def test_dedup_figures_ignore_blobs_awaiting_collection(client: httpx.AsyncClient) -> None:
    # A version deleted for good leaves its blob (no reference left) until the next
    # garbage collection: it is neither stored data of any version nor saved by dedup.
    r = await client.put("/api/v1/objects/models/gone.bin", content=b"g" * 4000)
    assert r.status_code == 200, r.text
    r = await client.delete(f"/api/v1/files/{r.json()['file_id']}")
    assert r.status_code in (200, 204), r.text
    await _put(client, "models/a.bin", b"y" * 1000)
    await _put(client, "models/b.bin", b"y" * 1000)  # same bytes: one blob
    dedup = (await client.get("/api/v1/storage/stats")).json()["dedup"]
    assert dedup["logical_bytes"] == 2000
    assert dedup["saved_bytes"] == 1000
    assert dedup["stored_bytes"] == 1000
