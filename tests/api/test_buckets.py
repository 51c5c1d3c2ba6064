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


async def test_quotas_are_enforced(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/buckets", json={"name": "quota-b", "quota_bytes": 250, "quota_objects": 2}
    )
    assert r.status_code == 201
    assert (await client.put("/api/v1/objects/quota-b/a", content=b"a" * 100)).status_code == 200
    assert (
        await client.put("/api/v1/objects/quota-b/a", content=b"b" * 150)
    ).status_code == 200  # overwrite
    assert_error(
        await client.put("/api/v1/objects/quota-b/b", content=b"c" * 101), 403, "QuotaExceeded"
    )
    assert (await client.put("/api/v1/objects/quota-b/b", content=b"c" * 100)).status_code == 200
    assert_error(await client.put("/api/v1/objects/quota-b/c", content=b"d"), 403, "QuotaExceeded")
    # Several files in one request, atomic: all or none.
    await client.delete("/api/v1/delete/quota-b/b")
    r = await client.post(
        "/api/v1/files/upload",
        files=[("file", ("x.bin", b"1")), ("file", ("y.bin", b"2"))],
        data={"bucket": "quota-b", "atomic": "true"},
    )
    assert_error(r, 403, "QuotaExceeded")
    keys = [o["key"] for o in (await client.get("/api/v1/list/quota-b")).json()["objects"]]
    assert keys == ["a"]
    stats = (await client.get("/api/v1/stats")).json()
    assert stats["buckets"]["quota-b"]["size_bytes"] == 150


async def test_unversioned_bucket_keeps_one_version(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/api/v1/buckets", json={"name": "flat", "versioning": False})
    ).status_code == 201
    for body in (b"one", b"two", b"three"):
        assert (await client.put("/api/v1/objects/flat/k", content=body)).status_code == 200
    versions = (await client.get("/api/v1/versions/flat/k")).json()["versions"]
    assert len(versions) == 1
    assert (await client.get("/api/v1/download/flat/k")).content == b"three"


async def test_huge_numbers_are_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/buckets", json={"name": "big-q", "quota_bytes": 10**30})
    assert_error(r, 400, "InvalidArgument")
    r = await client.post(
        "/api/v1/tokens", json={"name": "x", "scopes": ["read"], "expires_in": 10**20}
    )
    assert_error(r, 400, "InvalidArgument")
    for params in ({"marker": "s²"}, {"marker": "s" + "9" * 40}, {"min_size": "9" * 30}):
        assert_error(await client.get("/api/v1/files", params=params), 400, "InvalidArgument")


async def test_restores_respect_quotas(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/buckets", json={"name": "quota-r", "quota_objects": 1})
    first = (await client.put("/api/v1/objects/quota-r/a", content=b"1")).json()
    await client.delete("/api/v1/delete/quota-r/a")
    assert (await client.put("/api/v1/objects/quota-r/b", content=b"2")).status_code == 200
    assert_error(await client.post("/api/v1/restore/quota-r/a"), 403, "QuotaExceeded")
    r = await client.post("/api/v1/restore/quota-r/a", params={"version_id": first["file_id"]})
    assert_error(r, 403, "QuotaExceeded")
    keys = [o["key"] for o in (await client.get("/api/v1/list/quota-r")).json()["objects"]]
    assert keys == ["b"]
