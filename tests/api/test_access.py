"""Access control: tokens, scopes, bucket patterns, presigned URLs, public buckets, audit."""

from __future__ import annotations

import configparser
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from tests.api.conftest import (
    ADMIN_TOKEN,
    assert_error,
    make_settings,
    rendezvous,
    workers_starting_together,
)
from tests.api.test_service_routes import api_routes
from tfstorage.api.app import create_app
from tfstorage.domain.records import Token
from tfstorage.errors import ServiceUnavailable
from tfstorage.index.access import AccessIndex
from tfstorage.index.engine import create_index_engine
from tfstorage.index.tables import s3_keys
from tfstorage.service.access import hash_secret

pytestmark = pytest.mark.anyio


async def new_token(client: httpx.AsyncClient, **body: object) -> str:
    r = await client.post("/api/v1/tokens", json={"name": "t", **body})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class World:
    """Objects in `datasets` and `models`, uploaded by the admin."""

    file_ids: dict[str, str]


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    ids = {}
    for bucket, key in (("datasets", "d/x.csv"), ("models", "m/x.pt"), ("tensorfleet", "l.txt")):
        r = await client.put(f"/api/v1/objects/{bucket}/{key}", content=b"1,2")
        assert r.status_code == 200
        ids[bucket] = r.json()["file_id"]
    return World(ids)


KEYS = {"datasets": "d/x.csv", "models": "m/x.pt"}
UPLOAD = "0" * 32  # an upload id that names no session


def route_requests(bucket: str, file_id: str) -> list[tuple[str, str, str, str, dict[str, object]]]:
    """(route path, method, url, needed right, request kwargs) for every route.

    The needed right is "read:<bucket>", "write:<bucket>", "delete:<bucket>", "admin",
    "any" (any valid token) or "open" (no token needed).
    """
    key = KEYS[bucket]
    form = {
        "files": {"file": ("n.csv" if bucket == "datasets" else "n.pt", b"1")},
        "data": {"bucket": bucket},
    }
    return [
        ("/api/v1/files/upload", "POST", "/api/v1/files/upload", f"write:{bucket}", form),
        ("/api/v1/files", "GET", f"/api/v1/files?bucket={bucket}", f"read:{bucket}", {}),
        (
            "/api/v1/files/download/{file_id}",
            "GET",
            f"/api/v1/files/download/{file_id}",
            f"read:{bucket}",
            {},
        ),
        (
            "/api/v1/files/download/{file_id}",
            "HEAD",
            f"/api/v1/files/download/{file_id}",
            f"read:{bucket}",
            {},
        ),
        ("/api/v1/files/{file_id}", "GET", f"/api/v1/files/{file_id}", f"read:{bucket}", {}),
        (
            "/api/v1/files/{file_id}",
            "PUT",
            f"/api/v1/files/{file_id}",
            f"write:{bucket}",
            {"json": {"tags": {"a": "b"}}},
        ),
        ("/api/v1/files/{file_id}", "DELETE", f"/api/v1/files/{file_id}", f"delete:{bucket}", {}),
        ("/api/v1/upload", "POST", "/api/v1/upload", f"write:{bucket}", form),
        ("/api/v1/upload/stream", "POST", "/api/v1/upload/stream", f"write:{bucket}", form),
        (
            "/api/v1/objects/{bucket}/{key:objkey}",
            "PUT",
            f"/api/v1/objects/{bucket}/{key}",
            f"write:{bucket}",
            {"content": b"2"},
        ),
        (
            "/api/v1/download/{bucket}/{key:objkey}",
            "GET",
            f"/api/v1/download/{bucket}/{key}",
            f"read:{bucket}",
            {},
        ),
        (
            "/api/v1/download/{bucket}/{key:objkey}",
            "HEAD",
            f"/api/v1/download/{bucket}/{key}",
            f"read:{bucket}",
            {},
        ),
        ("/api/v1/list/{bucket}", "GET", f"/api/v1/list/{bucket}", f"read:{bucket}", {}),
        (
            "/api/v1/delete/{bucket}/{key:objkey}",
            "DELETE",
            f"/api/v1/delete/{bucket}/{key}",
            f"delete:{bucket}",
            {},
        ),
        (
            "/api/v1/versions/{bucket}/{key:objkey}",
            "GET",
            f"/api/v1/versions/{bucket}/{key}",
            f"read:{bucket}",
            {},
        ),
        (
            "/api/v1/restore/{bucket}/{key:objkey}",
            "POST",
            f"/api/v1/restore/{bucket}/{key}",
            f"write:{bucket}",
            {},
        ),
        ("/api/v1/buckets", "GET", "/api/v1/buckets", "any", {}),
        (
            "/api/v1/buckets",
            "POST",
            "/api/v1/buckets",
            "admin",
            {"json": {"name": f"new-{bucket}"}},
        ),
        ("/api/v1/buckets/{name}", "GET", f"/api/v1/buckets/{bucket}", f"read:{bucket}", {}),
        (
            "/api/v1/buckets/{name}",
            "PUT",
            f"/api/v1/buckets/{bucket}",
            "admin",
            {"json": {"description": "x"}},
        ),
        ("/api/v1/buckets/{name}", "DELETE", f"/api/v1/buckets/{bucket}", "admin", {}),
        (
            "/api/v1/buckets/{name}/files",
            "GET",
            f"/api/v1/buckets/{bucket}/files",
            f"read:{bucket}",
            {},
        ),
        (
            "/api/v1/tokens",
            "POST",
            "/api/v1/tokens",
            "admin",
            {"json": {"name": "x", "scopes": ["read"]}},
        ),
        ("/api/v1/tokens", "GET", "/api/v1/tokens", "admin", {}),
        ("/api/v1/tokens/{token_id}", "DELETE", "/api/v1/tokens/0000000000000000", "admin", {}),
        (
            "/api/v1/presign",
            "POST",
            "/api/v1/presign",
            f"read:{bucket}",
            {"json": {"method": "GET", "bucket": bucket, "key": key}},
        ),
        ("/api/v1/presign/rotate-key", "POST", "/api/v1/presign/rotate-key", "admin", {}),
        ("/api/v1/audit", "GET", "/api/v1/audit", "admin", {}),
        ("/api/v1/stats", "GET", "/api/v1/stats", "admin", {}),
        ("/api/v1/storage/stats", "GET", "/api/v1/storage/stats", "admin", {}),
        ("/api/v1/storage/metrics", "GET", "/api/v1/storage/metrics", "admin", {}),
        ("/api/v1/health/detailed", "GET", "/api/v1/health/detailed", "admin", {}),
        ("/metrics", "GET", "/metrics", "admin", {}),
        ("/api/v1/storage/replicate", "POST", "/api/v1/storage/replicate", "admin", {}),
        ("/api/v1/storage/health", "GET", "/api/v1/storage/health", "open", {}),
        ("/health", "GET", "/health", "open", {}),
        ("/upload", "POST", "/upload", "write:tensorfleet", {"files": {"file": ("up.txt", b"1")}}),
        ("/download/{filename:objkey}", "GET", "/download/l.txt", "read:tensorfleet", {}),
        ("/download/{filename:objkey}", "HEAD", "/download/l.txt", "read:tensorfleet", {}),
        # resumable uploads (issue 5)
        (
            "/api/v1/uploads",
            "POST",
            "/api/v1/uploads",
            f"write:{bucket}",
            {"json": {"bucket": bucket, "key": key}},
        ),
        ("/api/v1/uploads", "GET", f"/api/v1/uploads?bucket={bucket}", f"write:{bucket}", {}),
        ("/api/v1/uploads/{upload_id}", "GET", f"/api/v1/uploads/{UPLOAD}", f"write:{bucket}", {}),
        (
            "/api/v1/uploads/{upload_id}/parts/{part_number}",
            "PUT",
            f"/api/v1/uploads/{UPLOAD}/parts/1",
            f"write:{bucket}",
            {"content": b"1"},
        ),
        (
            "/api/v1/uploads/{upload_id}/complete",
            "POST",
            f"/api/v1/uploads/{UPLOAD}/complete",
            f"write:{bucket}",
            {"json": {"parts": [{"part_number": 1, "etag": "0" * 32}]}},
        ),
        (
            "/api/v1/uploads/{upload_id}",
            "DELETE",
            f"/api/v1/uploads/{UPLOAD}",
            f"write:{bucket}",
            {},
        ),
        # batch, archive, jobs (issue 5)
        (
            "/api/v1/batch/delete",
            "POST",
            "/api/v1/batch/delete",
            f"delete:{bucket}",
            {"json": {"bucket": bucket, "keys": [key]}},
        ),
        (
            "/api/v1/batch/copy",
            "POST",
            "/api/v1/batch/copy",
            f"write:{bucket}",  # and read: on the source, here the same bucket
            {
                "json": {
                    "bucket": bucket,
                    "prefix": key.split("/")[0] + "/",
                    "dest_bucket": bucket,
                    "dest_prefix": "copied/",
                }
            },
        ),
        # Any token may ask; only the job's creator (or an admin) gets more than a 404.
        ("/api/v1/jobs/{job_id}", "GET", "/api/v1/jobs/" + "0" * 32, "any", {}),
        ("/api/v1/archive/{bucket}", "GET", f"/api/v1/archive/{bucket}", f"read:{bucket}", {}),
        # lifecycle and retention locks (issue 6)
        (
            "/api/v1/buckets/{name}/lifecycle",
            "GET",
            f"/api/v1/buckets/{bucket}/lifecycle",
            f"read:{bucket}",
            {},
        ),
        (
            "/api/v1/buckets/{name}/lifecycle",
            "PUT",
            f"/api/v1/buckets/{bucket}/lifecycle",
            "admin",
            {"json": [{"id": "old", "expire_days": 365}]},
        ),
        (
            "/api/v1/buckets/{name}/lifecycle",
            "DELETE",
            f"/api/v1/buckets/{bucket}/lifecycle",
            "admin",
            {},
        ),
        (
            "/api/v1/lifecycle/run",
            "POST",
            f"/api/v1/lifecycle/run?dry_run=true&bucket={bucket}",
            "admin",
            {},
        ),
        (
            "/api/v1/files/{file_id}/retention",
            "GET",
            f"/api/v1/files/{file_id}/retention",
            f"read:{bucket}",
            {},
        ),
        (
            "/api/v1/files/{file_id}/retention",
            "PUT",
            f"/api/v1/files/{file_id}/retention",
            f"write:{bucket}",
            {"json": {}},  # an empty change: clearing a legal hold needs admin
        ),
        # integrity: verify and scrub (issue 6)
        (
            "/api/v1/files/{file_id}/verify",
            "POST",
            f"/api/v1/files/{file_id}/verify",
            f"read:{bucket}",
            {},
        ),
        ("/api/v1/scrub/run", "POST", "/api/v1/scrub/run", "admin", {"params": {"wait": "true"}}),
        ("/api/v1/scrub", "GET", "/api/v1/scrub", "admin", {}),
        # analytics and observability (issue 6)
        (
            "/api/v1/storage/stats/history",
            "GET",
            "/api/v1/storage/stats/history",
            "admin",
            {},
        ),
        # usage counters (issue 11)
        ("/api/v1/storage/counters", "GET", "/api/v1/storage/counters", "admin", {}),
        (
            "/api/v1/storage/counters/repair",
            "POST",
            "/api/v1/storage/counters/repair",
            "admin",
            {},
        ),
    ]


async def test_the_route_matrix_covers_every_route(app: FastAPI) -> None:
    listed = {(path, method) for path, method, *_ in route_requests("datasets", "0" * 32)}
    actual = {(r.path, m) for r in api_routes(list(app.routes)) for m in r.methods}
    assert actual == listed  # a new route must be added to the matrix (and guarded)


async def test_without_a_token_only_health_answers(anon: httpx.AsyncClient, world: World) -> None:
    for bucket in ("datasets", "models"):
        for path, method, url, right, kwargs in route_requests(bucket, world.file_ids[bucket]):
            r = await anon.request(method, url, **kwargs)  # type: ignore[arg-type]
            if right == "open":
                assert r.status_code == 200, (path, r.text)
                assert set(r.json()) == {"status", "service", "timestamp"}  # up/down only
            else:
                assert r.status_code == 401, (method, path, r.status_code, r.text)
                if method != "HEAD":
                    assert r.json()["code"] == "Unauthenticated"
                assert r.headers["www-authenticate"].startswith("Bearer")


async def test_read_only_datasets_token_reads_exactly_datasets(
    client: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    token = await new_token(client, scopes=["read"], buckets=["datasets"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=bearer(token)
    ) as reader:
        for bucket in ("datasets", "models"):
            for path, method, url, right, kwargs in route_requests(bucket, world.file_ids[bucket]):
                r = await reader.request(method, url, **kwargs)  # type: ignore[arg-type]
                allowed = right in ("open", "any", "read:datasets")
                if path == "/api/v1/jobs/{job_id}":
                    assert_error(r, 404, "NoSuchJob")  # nobody's job: as any job not its own
                elif allowed:
                    assert 200 <= r.status_code < 300, (method, path, bucket, r.text)
                elif (
                    path.startswith("/api/v1/files/") and "{file_id}" in path and bucket == "models"
                ):
                    # Ids of objects in other buckets name nothing for this token.
                    assert r.status_code == 404, (method, path, r.text)
                else:
                    assert r.status_code == 403, (method, path, bucket, r.status_code, r.text)
                    if method != "HEAD":
                        assert r.json()["code"] == "AccessDenied"
        listed = (await reader.get("/api/v1/buckets")).json()["buckets"]
        assert [b["name"] for b in listed] == ["datasets"]


async def test_no_existence_leak_in_403(
    client: httpx.AsyncClient, app: FastAPI, world: World
) -> None:
    token = await new_token(client, scopes=["read"], buckets=["datasets"])
    h = bearer(token)
    there = await client.get("/api/v1/download/models/m/x.pt", headers=h)
    absent = await client.get("/api/v1/download/models/nothing.pt", headers=h)
    no_bucket = await client.get("/api/v1/download/nobucket/x", headers=h)
    assert there.status_code == absent.status_code == no_bucket.status_code == 403
    assert there.json()["error"].replace("m/x.pt", "K") == absent.json()["error"].replace(
        "nothing.pt", "K"
    )


async def test_malformed_expired_revoked_tokens(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    url = "/api/v1/list/datasets"
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "tfs_nobearer", "Bearer tfs_wrong"):
        r = await anon.get(url, headers={"Authorization": header})
        assert_error(r, 401, "Unauthenticated")
    r = await anon.get(url, params={"token": ADMIN_TOKEN})
    assert_error(r, 401, "Unauthenticated")
    assert "Authorization header" in r.json()["error"]
    r = await anon.get(
        url,
        params={"access_token": ADMIN_TOKEN},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert_error(r, 401, "Unauthenticated")

    short = await new_token(client, scopes=["read"], expires_in=1)
    assert (await anon.get(url, headers=bearer(short))).status_code == 200
    await anyio.sleep(1.2)
    r = await anon.get(url, headers=bearer(short))
    assert_error(r, 401, "Unauthenticated")
    assert "expired" in r.json()["error"]

    created = (
        await client.post("/api/v1/tokens", json={"name": "gone", "scopes": ["read"]})
    ).json()
    assert (await anon.get(url, headers=bearer(created["token"]))).status_code == 200
    r = await client.delete(f"/api/v1/tokens/{created['id']}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = await anon.get(url, headers=bearer(created["token"]))
    assert_error(r, 401, "Unauthenticated")
    assert "revoked" in r.json()["error"]


async def test_token_listing_never_shows_secrets(client: httpx.AsyncClient) -> None:
    secret = await new_token(client, scopes=["read"], buckets=["ckpt-*"], prefix="run1/")
    body = (await client.get("/api/v1/tokens")).text
    assert secret not in body and ADMIN_TOKEN not in body
    tokens = (await client.get("/api/v1/tokens")).json()["tokens"]
    mine = next(t for t in tokens if t["buckets"] == ["ckpt-*"])
    assert mine["scopes"] == ["read"] and mine["prefix"] == "run1/" and "token" not in mine


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scopes": ["superuser"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["read"], "buckets": ["../etc"]},
        {"name": "x", "scopes": ["read"], "buckets": []},
        {"name": "x", "scopes": ["read"], "prefix": "../"},
        {"name": "x", "scopes": ["read"], "expires_in": -5},
        {"name": "x", "scopes": ["read"], "id": "chosen"},
    ],
)
async def test_bad_token_requests(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    r = await client.post("/api/v1/tokens", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["code"] in ("InvalidArgument", "InvalidObjectName")


async def test_bucket_patterns_and_prefixes(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    for name in ("ckpt-llama", "ckpt-bert", "other"):
        assert (await client.post("/api/v1/buckets", json={"name": name})).status_code == 201
    token = await new_token(client, scopes=["read", "write"], buckets=["ckpt-*"], prefix="run1/")
    h = bearer(token)
    assert (
        await anon.put("/api/v1/objects/ckpt-llama/run1/e1.ckpt", content=b"1", headers=h)
    ).status_code == 200
    assert (
        await anon.put("/api/v1/objects/ckpt-bert/run1/e1.ckpt", content=b"1", headers=h)
    ).status_code == 200
    assert_error(
        await anon.put("/api/v1/objects/ckpt-llama/run2/e1.ckpt", content=b"1", headers=h),
        403,
        "AccessDenied",
    )
    assert_error(
        await anon.put("/api/v1/objects/other/run1/e1.ckpt", content=b"1", headers=h),
        403,
        "AccessDenied",
    )
    r = await anon.get("/api/v1/list/ckpt-llama", params={"prefix": "run1/"}, headers=h)
    assert [o["key"] for o in r.json()["objects"]] == ["run1/e1.ckpt"]
    assert_error(await anon.get("/api/v1/list/ckpt-llama", headers=h), 403, "AccessDenied")
    # The form's key decides: a filename outside the prefix is refused before commit.
    r = await anon.post(
        "/api/v1/upload",
        files={"file": ("e2.ckpt", b"1")},
        data={"bucket": "ckpt-llama"},
        headers=h,
    )
    assert_error(r, 403, "AccessDenied")
    r = await anon.post(
        "/api/v1/upload",
        files={"file": ("e2.ckpt", b"1")},
        data={"bucket": "ckpt-llama", "key": "run1/e2.ckpt"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    # Write without delete: deleting is refused.
    assert_error(
        await anon.delete("/api/v1/delete/ckpt-llama/run1/e1.ckpt", headers=h), 403, "AccessDenied"
    )


async def test_presigned_get_and_put(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    await client.put("/api/v1/objects/datasets/share/data.csv", content=b"a,b\n1,2\n")
    r = await client.post(
        "/api/v1/presign",
        json={"method": "GET", "bucket": "datasets", "key": "share/data.csv", "expires_in": 600},
    )
    assert r.status_code == 200, r.text
    url = r.json()["url"]
    got = await anon.get(url)
    assert got.status_code == 200 and got.content == b"a,b\n1,2\n"
    assert (await anon.head(url)).status_code == 200
    # The URL names one object and one method.
    parts = urlsplit(url)
    assert_error(
        await anon.delete(f"/api/v1/delete/datasets/share/data.csv?{parts.query}"),
        403,
        "AccessDenied",
    )

    r = await client.post(
        "/api/v1/presign",
        json={"method": "PUT", "bucket": "datasets", "key": "in/new.csv", "max_size": 10},
    )
    put_url = r.json()["url"]
    assert (await anon.put(put_url, content=b"x,y\n")).status_code == 200
    assert (await client.get("/api/v1/download/datasets/in/new.csv")).content == b"x,y\n"
    assert_error(await anon.put(put_url, content=b"z" * 11), 413, "EntityTooLarge")
    assert_error(await anon.get(put_url.replace("/objects/", "/download/")), 403, "AccessDenied")


def _tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return f"{parts.path}?{urlencode(query)}"


async def test_presigned_tampering_expiry_and_revocation(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    await client.put("/api/v1/objects/datasets/a.csv", content=b"1")
    await client.put("/api/v1/objects/datasets/b.csv", content=b"2")
    issuer = (
        await client.post(
            "/api/v1/tokens", json={"name": "sharer", "scopes": ["read"], "buckets": ["datasets"]}
        )
    ).json()
    h = bearer(issuer["token"])
    url = (
        await anon.post(
            "/api/v1/presign",
            json={"method": "GET", "bucket": "datasets", "key": "a.csv"},
            headers=h,
        )
    ).json()["url"]
    path = urlsplit(url).path
    assert (await anon.get(url)).status_code == 200

    query = dict(parse_qsl(urlsplit(url).query))
    tampered = [
        url.replace("/a.csv", "/b.csv"),
        _tamper(url, **{"X-Tfs-Expires": str(int(query["X-Tfs-Expires"]) + 3600)}),
        _tamper(url, **{"X-Tfs-Signature": "0" * 64}),
        _tamper(url, **{"X-Tfs-Token": "0" * 16}),
        f"{path}?X-Tfs-Signature={query['X-Tfs-Signature']}",
    ]
    for bad in tampered:
        assert_error(await anon.get(bad), 403, "AccessDenied")

    r = await anon.post(
        "/api/v1/presign",
        json={"method": "GET", "bucket": "datasets", "key": "a.csv", "expires_in": 3},
        headers=h,
    )
    short = r.json()["url"]
    # Whole seconds: 3 leave room for a loaded machine between issuing and using it.
    assert (await anon.get(short)).status_code == 200
    expires = int(dict(parse_qsl(urlsplit(short).query))["X-Tfs-Expires"])
    await anyio.sleep(max(0.0, expires - time.time()) + 1.1)
    assert_error(await anon.get(short), 403, "AccessDenied")

    r = await anon.post(
        "/api/v1/presign",
        json={"method": "GET", "bucket": "datasets", "key": "a.csv", "expires_in": 8 * 24 * 3600},
        headers=h,
    )
    assert_error(r, 400, "InvalidArgument")
    r = await anon.post(
        "/api/v1/presign", json={"method": "PUT", "bucket": "datasets", "key": "a.csv"}, headers=h
    )
    assert_error(r, 403, "AccessDenied")  # a read-only token cannot sign uploads

    await client.delete(f"/api/v1/tokens/{issuer['id']}")
    assert_error(await anon.get(url), 403, "AccessDenied")


async def test_public_read_bucket(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    assert (
        await client.post("/api/v1/buckets", json={"name": "open-data", "public_read": True})
    ).status_code == 201
    await client.put("/api/v1/objects/open-data/x.txt", content=b"hi")
    assert (await anon.get("/api/v1/download/open-data/x.txt")).content == b"hi"
    assert (await anon.get("/api/v1/list/open-data")).json()["objects"][0]["key"] == "x.txt"
    assert [b["name"] for b in (await anon.get("/api/v1/buckets")).json()["buckets"]] == [
        "open-data"
    ]
    assert_error(
        await anon.put("/api/v1/objects/open-data/y.txt", content=b"1"), 401, "Unauthenticated"
    )
    assert_error(await anon.delete("/api/v1/delete/open-data/x.txt"), 401, "Unauthenticated")
    await client.put("/api/v1/buckets/open-data", json={"public_read": False})
    assert_error(await anon.get("/api/v1/download/open-data/x.txt"), 401, "Unauthenticated")


async def test_audit_log(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    writer = await new_token(
        client, name="trainer-7", scopes=["write", "delete"], buckets=["checkpoints"]
    )
    await anon.put("/api/v1/objects/checkpoints/j/e1.ckpt", content=b"1", headers=bearer(writer))
    await anon.delete("/api/v1/delete/checkpoints/j/e1.ckpt", headers=bearer(writer))
    entries = (await client.get("/api/v1/audit", params={"bucket": "checkpoints"})).json()[
        "entries"
    ]
    assert [(e["action"], e["actor"], e["key"]) for e in entries] == [
        ("upload", "trainer-7", "j/e1.ckpt"),
        ("delete", "trainer-7", "j/e1.ckpt"),
    ]
    assert all(e["client"] and e["request_id"] for e in entries)
    assert (await client.get("/api/v1/audit", params={"since": "2999-01-01T00:00:00Z"})).json()[
        "entries"
    ] == []
    everything = (await client.get("/api/v1/audit")).json()["entries"]
    assert any(e["action"] == "create_token" for e in everything)


async def test_secrets_never_logged(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    secret = await new_token(client, scopes=["read"])
    await anon.get("/api/v1/list/datasets", headers=bearer(secret))
    await anon.get("/api/v1/list/datasets", headers=bearer(secret + "x"))
    assert secret not in caplog.text and ADMIN_TOKEN not in caplog.text


@pytest.fixture
async def fresh_app(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, Path]]:
    settings = make_settings(tmp_path, admin_token="")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app, settings.data_dir


async def test_first_start_writes_an_admin_token(fresh_app: tuple[FastAPI, Path]) -> None:
    app, data_dir = fresh_app
    path = data_dir / "admin.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    token = path.read_text().strip()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/api/v1/tokens", headers=bearer(token))).status_code == 200
        assert (await c.get("/api/v1/tokens")).status_code == 401


async def test_second_start_keeps_the_first_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, admin_token="")
    path = settings.data_dir / "admin.token"
    for _ in range(2):
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            pass
        if path.exists():
            first = path.read_text()
            path.unlink()
        else:
            # The second start found the first token in the index and made no other.
            assert first.startswith("tfs_")
            return
    raise AssertionError("a second admin token was generated")


async def test_auth_disabled(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, auth_enabled=False, admin_token=""))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.put("/api/v1/objects/models/a.pt", content=b"1")).status_code == 200
            health = (await c.get("/health")).json()
            assert "AUTH_ENABLED=false" in health["warning"]
    assert not (tmp_path / "data" / "admin.token").exists()


async def test_prefix_token_cannot_search_every_bucket(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    await client.put("/api/v1/objects/models/team-b/secret.bin", content=b"s")
    h = bearer(await new_token(client, scopes=["read"], buckets=["*"], prefix="team-a/"))
    assert_error(await anon.get("/api/v1/files", headers=h), 403, "AccessDenied")
    assert_error(
        await anon.get(
            "/api/v1/files", params={"bucket": "models", "prefix": "team-b/"}, headers=h
        ),
        403,
        "AccessDenied",
    )
    r = await anon.get("/api/v1/files", params={"bucket": "models", "prefix": "team-a/"}, headers=h)
    assert r.status_code == 200 and r.json()["files"] == []


async def test_presigned_get_opens_nothing_but_its_download(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    old = (await client.put("/api/v1/objects/models/p.bin", content=b"OLD-SECRET")).json()
    await client.put("/api/v1/objects/models/p.bin", content=b"new-public")
    url = (
        await client.post(
            "/api/v1/presign", json={"method": "GET", "bucket": "models", "key": "p.bin"}
        )
    ).json()["url"]
    assert (await anon.get(url)).content == b"new-public"
    query = urlsplit(url).query
    assert_error(await anon.get(f"/api/v1/versions/models/p.bin?{query}"), 403, "AccessDenied")
    assert_error(await anon.get(f"{url}&version_id={old['file_id']}"), 403, "AccessDenied")
    assert_error(await anon.get(f"/api/v1/list/models?{query}"), 403, "AccessDenied")


async def test_a_presigned_link_is_not_declared_dead_when_the_index_cannot_answer(
    app: FastAPI,
    client: httpx.AsyncClient,
    anon: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An index outage while checking the issuing token is a 503 to retry; a 403 would
    tell the holder the link is dead (a broad except once made every failure a 403)."""
    await client.put("/api/v1/objects/models/up.bin", content=b"fine")
    url = (
        await client.post(
            "/api/v1/presign", json={"method": "GET", "bucket": "models", "key": "up.bin"}
        )
    ).json()["url"]

    def index_down(token_id: str) -> None:
        raise ServiceUnavailable("the index is not answering")

    monkeypatch.setattr(app.state.storage.access._index, "get_token", index_down)
    assert_error(await anon.get(url), 503, "ServiceUnavailable")
    monkeypatch.undo()
    assert (await anon.get(url)).content == b"fine"


async def test_fields_after_the_file_are_authorized_as_sent(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    h = bearer(await new_token(client, scopes=["write"], buckets=["models"], prefix="team-a/"))
    boundary = "B"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="w.bin"\r\n\r\nweights\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="bucket"\r\n\r\nmodels\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\nteam-a/w.bin\r\n--{boundary}--\r\n'
    ).encode()
    headers = {**h, "content-type": f"multipart/form-data; boundary={boundary}"}
    r = await anon.post("/api/v1/upload", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["bucket"], r.json()["key"]) == ("models", "team-a/w.bin")
    outside = body.replace(b"team-a/w.bin", b"team-b/w.bin")
    assert_error(
        await anon.post("/api/v1/upload", content=outside, headers=headers), 403, "AccessDenied"
    )


async def test_a_second_instance_on_the_index_says_where_the_admin_token_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_settings(tmp_path, admin_token="", data_dir=tmp_path / "first")
    app = create_app(first)
    async with app.router.lifespan_context(app):
        assert (first.data_dir / "admin.token").exists()
    second = make_settings(
        tmp_path, admin_token="", data_dir=tmp_path / "second", database_url=first.index_url
    )
    app = create_app(second)
    with caplog.at_level(logging.WARNING, logger="tfstorage.service.access"):
        async with app.router.lifespan_context(app):
            pass
    assert not (second.data_dir / "admin.token").exists()
    assert "set ADMIN_TOKEN on every one" in caplog.text


def _admin_s3_verifies(app: FastAPI, data_dir: Path) -> bool:
    pair = configparser.ConfigParser(interpolation=None)
    pair.read(data_dir / "admin.s3")
    key_id, secret = pair["default"]["aws_access_key_id"], pair["default"]["aws_secret_access_key"]
    return bool(app.state.storage.access.s3.verifies(key_id, secret))


async def test_workers_starting_together_with_admin_token_all_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each found no ADMIN_TOKEN row and inserted one; all but the first failed their
    start-up on the unique secret hash, and uvicorn's supervisor then stopped the server."""
    settings = make_settings(tmp_path, admin_token=ADMIN_TOKEN)
    rendezvous(monkeypatch, AccessIndex, "token_by_hash", 3)
    ensured: list[bool] = []
    ensure = AccessIndex.ensure_token

    def counted(self: AccessIndex, **kwargs: Any) -> tuple[Token, bool]:
        found = ensure(self, **kwargs)
        ensured.append(found[1])
        return found

    monkeypatch.setattr(AccessIndex, "ensure_token", counted)
    apps = await workers_starting_together(settings, 3)
    # One at a time: the first made it, the others found it before trying to.
    assert ensured == [True]
    engine = create_index_engine(settings.index_url)
    tokens = AccessIndex(engine)
    assert [t.name for t in tokens.list_tokens()] == ["admin (ADMIN_TOKEN)"]
    assert _admin_s3_verifies(apps[0], settings.data_dir)
    # One key pair: the workers that found the token did not write their own.
    with engine.connect() as conn:
        assert len(conn.execute(select(s3_keys.c.access_key_id)).all()) == 1
    engine.dispose()


async def test_workers_starting_together_make_one_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each found no token and made its own, and wrote it over the others' admin.token."""
    settings = make_settings(tmp_path, admin_token="")
    rendezvous(monkeypatch, AccessIndex, "count_tokens", 3)
    apps = await workers_starting_together(settings, 3)
    engine = create_index_engine(settings.index_url)
    tokens = AccessIndex(engine)
    assert tokens.count_tokens() == 1
    secret = (settings.data_dir / "admin.token").read_text().strip()
    assert tokens.token_by_hash(hash_secret(secret)) is not None
    assert _admin_s3_verifies(apps[0], settings.data_dir)
    engine.dispose()
