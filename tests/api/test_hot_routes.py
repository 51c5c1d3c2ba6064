"""PUT, GET and HEAD of an object without a query string skip FastAPI's routing
(api/hot_routes.py): they must answer exactly as the routed way does, errors included."""

from __future__ import annotations

import os

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.api.conftest import assert_error

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

# What differs between two uploads of as many bytes to two keys.
_PER_OBJECT = {
    *("file_id", "version_id", "key", "filename", "created_at", "last_modified", "url"),
    *("etag", "sha256", "files"),
}
# Headers whose values differ per request or per object.
_PER_REQUEST = {
    *("x-request-id", "x-file-id", "content-disposition", "last-modified", "date"),
    *("etag", "x-checksum-sha256"),
}


def _shape(body: dict[str, object]) -> dict[str, object]:
    return {k: ("*" if k in _PER_OBJECT else v) for k, v in body.items()}


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: ("*" if k in _PER_REQUEST else v) for k, v in response.headers.items()}


async def test_the_fast_way_answers_as_the_routed_way(client: httpx.AsyncClient) -> None:
    data, other = os.urandom(3000), os.urandom(3000)  # as many bytes, not deduplicated
    headers = {"Content-Type": "application/x-thing", "X-Metadata": '{"run": 7}'}
    fast = await client.put("/api/v1/objects/artifacts/fast/a.bin", content=data, headers=headers)
    # Any query string takes the routed way (the PUT route ignores unknown parameters).
    routed = await client.put(
        "/api/v1/objects/artifacts/slow/a.bin?via=router", content=other, headers=headers
    )
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    fast_body, routed_body = fast.json(), routed.json()
    assert list(fast_body) == list(routed_body)  # same fields, same order
    assert _shape(fast_body) == _shape(routed_body)
    assert [_shape(f) for f in fast_body["files"]] == [_shape(f) for f in routed_body["files"]]
    assert _headers(fast) == _headers(routed)
    assert (
        fast.headers["x-request-id"]
        and fast.headers["x-request-id"] != routed.headers["x-request-id"]
    )

    for method in ("GET", "HEAD"):
        fast = await client.request(method, "/api/v1/download/artifacts/fast/a.bin")
        routed = await client.request(method, "/api/v1/download/artifacts/slow/a.bin?via=r")
        assert fast.status_code == routed.status_code == 200
        assert fast.content == (data if method == "GET" else b"")
        assert routed.content == (other if method == "GET" else b"")
        assert _headers(fast) == _headers(routed)


async def test_errors_on_the_fast_way_are_the_usual_json(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    assert_error(await client.get("/api/v1/download/artifacts/missing.bin"), 404, "NoSuchKey")
    assert_error(await client.put("/api/v1/objects/nobucket/k", content=b"x"), 404, "NoSuchBucket")
    assert_error(
        await anon.put("/api/v1/objects/artifacts/k", content=b"x"), 401, "Unauthenticated"
    )
    r = await client.put(
        "/api/v1/objects/artifacts/k",
        content=b"x",
        headers={"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="},
    )
    assert_error(r, 400, "BadDigest")
    assert (await client.get("/api/v1/download/artifacts/k")).status_code == 404  # nothing kept


async def test_the_fast_way_does_not_go_through_the_router(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fast way each of these requests would reach a route's handler."""

    async def refuse(*args: object) -> None:
        raise AssertionError("routed")

    monkeypatch.setattr(APIRoute, "handle", refuse)
    assert (await client.put("/api/v1/objects/artifacts/r.bin", content=b"abc")).status_code == 200
    assert (await client.get("/api/v1/download/artifacts/r.bin")).content == b"abc"
    assert (await client.head("/api/v1/download/artifacts/r.bin")).status_code == 200
    # A query string, another route: the routed way (here refused by the patch).
    assert (await client.get("/api/v1/download/artifacts/r.bin?x=1")).status_code == 500
    assert (await client.get("/api/v1/list/artifacts")).status_code == 500
