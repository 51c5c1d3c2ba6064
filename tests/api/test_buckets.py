"""Buckets: the standard set, create, inspect, update, delete."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import assert_error

pytestmark = pytest.mark.anyio


async def test_standard_buckets_exist(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/buckets")
    names = [b["name"] for b in r.json()["buckets"]]
    assert set(names) >= {"models", "datasets", "checkpoints", "artifacts", "jobs", "tensorfleet"}
    models = next(b for b in r.json()["buckets"] if b["name"] == "models")
    # The original shape: name, creation_date, objects, size as a human string.
    assert models["objects"] == 0 and models["size"] == "0 B" and models["size_bytes"] == 0
    assert ".safetensors" in models["allowed_types"]


async def test_create_get_update_delete(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/buckets", json={"name": "ckpt-llama", "allowed_types": ["ckpt", ".PT"]}
    )
    assert r.status_code == 201, r.text
    assert r.json()["allowed_types"] == [".ckpt", ".pt"]
    assert_error(
        await client.post("/api/v1/buckets", json={"name": "ckpt-llama"}),
        409,
        "BucketAlreadyExists",
    )

    await client.put("/api/v1/objects/ckpt-llama/e1.ckpt", content=b"12345")
    info = (await client.get("/api/v1/buckets/ckpt-llama")).json()
    assert info["objects"] == 1 and info["size_bytes"] == 5

    r = await client.put(
        "/api/v1/buckets/ckpt-llama", json={"description": "llama runs", "allowed_types": None}
    )
    assert r.status_code == 200 and r.json()["description"] == "llama runs"
    assert r.json()["allowed_types"] is None
    await client.put("/api/v1/objects/ckpt-llama/any.exe", content=b"1")

    assert_error(await client.delete("/api/v1/buckets/ckpt-llama"), 409, "BucketNotEmpty")
    r = await client.delete("/api/v1/buckets/ckpt-llama", params={"force": "true"})
    assert r.status_code == 200
    assert_error(await client.get("/api/v1/buckets/ckpt-llama"), 404, "NoSuchBucket")


async def test_bucket_with_only_deleted_keys_can_go(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/buckets", json={"name": "scratch"})
    await client.put("/api/v1/objects/scratch/x", content=b"1")
    await client.delete("/api/v1/delete/scratch/x")
    assert (await client.delete("/api/v1/buckets/scratch")).status_code == 200


@pytest.mark.parametrize(
    "name",
    ["ab", "A" * 10, "Has_Upper", "-start", "end-", "a..b", "192.168.1.1", "x" * 64, "xn--abc"],
)
async def test_invalid_bucket_names(client: httpx.AsyncClient, name: str) -> None:
    assert_error(
        await client.post("/api/v1/buckets", json={"name": name}), 400, "InvalidBucketName"
    )


async def test_create_rejects_unknown_fields(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/buckets", json={"name": "okname", "created_at": "2020-01-01"})
    assert_error(r, 400, "InvalidArgument")
    assert_error(await client.post("/api/v1/buckets", content=b"{not json"), 400, "InvalidArgument")
