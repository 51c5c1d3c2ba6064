"""Authentication before validation: an anonymous caller learns nothing about a route's
input (issue 10), and the whole-body validation errors name what the route expects."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN, assert_error, make_settings
from tests.server import conftest as server_fixtures
from tfstorage.api.app import create_app

pytestmark = pytest.mark.anyio
postgres_database = server_fixtures.postgres_database  # a fresh PostgreSQL database

# Routes an anonymous caller may use whatever its input, and why: they are open.
OPEN = {
    ("/health", "get"): "liveness for load balancers: no token, no input",
    ("/api/v1/storage/health", "get"): "the same, under the API prefix",
}
_WRONG = {"integer": "not-a-number", "boolean": "perhaps", "number": "NaNx"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def app(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FastAPI]:
    # Local disk only: who may call what does not depend on where the bytes go; the index
    # (tokens, public-read buckets) on both databases.
    url = "" if request.param == "sqlite" else request.getfixturevalue("postgres_database")
    application = create_app(make_settings(tmp_path, database_url=url))
    async with application.router.lifespan_context(application):
        yield application


def _client(app: FastAPI, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers)


def _url(path: str) -> str:
    # A private bucket that exists, and well-formed ids: only the body/query is bad.
    values = {"bucket": "datasets", "file_id": "0" * 32, "upload_id": "0" * 32}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "some-name"), path)


def _malformed_query(operation: dict[str, Any]) -> dict[str, str]:
    query = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query":
            kind = parameter.get("schema", {}).get("type", "")
            query[parameter["name"]] = _WRONG.get(kind, "\u0000{")
    return query


async def test_every_route_answers_an_anonymous_malformed_request_with_401(
    app: FastAPI,
) -> None:
    async with _client(app, ADMIN) as admin, _client(app) as anon:
        document = (await admin.get("/openapi.json")).json()
        walked = 0
        wrong: list[tuple[str, str, int, str]] = []
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                url = _url(path)
                kwargs: dict[str, Any] = {"params": _malformed_query(operation)}
                if method in ("post", "put", "patch", "delete"):
                    kwargs["content"] = b'{"not": json'
                    kwargs["headers"] = {"Content-Type": "application/json"}
                r = await anon.request(method.upper(), url, **kwargs)
                walked += 1
                if (path, method) in OPEN:
                    assert r.status_code == 200, (path, r.text)
                    continue
                if r.status_code != 401 or (
                    method != "head" and r.json()["code"] != "Unauthenticated"
                ):
                    wrong.append((method, path, r.status_code, r.text[:100]))
                    continue
                assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
                # The same request with a token is judged on its input: it was malformed
                # (a route that reads no body, such as rotate-key, ignores the one sent).
                if kwargs["params"] or "requestBody" in operation:
                    r = await admin.request(method.upper(), url, **kwargs)
                    assert 400 <= r.status_code < 500 and r.status_code != 401, (path, r.text)
        assert wrong == [], "\n".join(map(str, wrong))
        assert walked >= 40


async def test_a_form_to_a_json_route_from_an_anonymous_caller_is_401(app: FastAPI) -> None:
    async with _client(app) as anon:
        for path in ("/api/v1/tokens", "/api/v1/buckets", "/api/v1/batch/delete"):
            assert_error(await anon.post(path, data={"name": "x"}), 401, "Unauthenticated")
            assert_error(await anon.post(path, params={"name": "x"}), 401, "Unauthenticated")
        # A token that is not valid is refused as such, before the input is looked at.
        r = await anon.post(
            "/api/v1/tokens", content=b"{", headers={"Authorization": "Bearer tfs_nope"}
        )
        assert_error(r, 401, "Unauthenticated")
        assert "invalid_token" in r.headers["www-authenticate"]


async def test_a_public_read_bucket_validates_an_anonymous_read_first(app: FastAPI) -> None:
    # Anonymous reads of a public-read bucket are allowed, so its input may be judged;
    # writes to it still need a token first.
    async with _client(app, ADMIN) as admin, _client(app) as anon:
        r = await admin.post("/api/v1/buckets", json={"name": "open-data", "public_read": True})
        assert r.status_code in (200, 201), r.text
        assert (await anon.get("/api/v1/list/open-data")).status_code == 200
        assert_error(await anon.get("/api/v1/list/open-data?limit=lots"), 400, "InvalidArgument")
        assert_error(await anon.get("/api/v1/list/datasets?limit=lots"), 401, "Unauthenticated")
        r = await anon.post("/api/v1/restore/open-data/k", params={"version_id": "\u0000"})
        assert_error(r, 401, "Unauthenticated")


async def test_whole_body_errors_name_the_fields_and_the_content_type(app: FastAPI) -> None:
    async with _client(app, ADMIN) as admin:
        form = await admin.post("/api/v1/tokens", data={"name": "x"})
        assert_error(form, 400, "InvalidArgument")
        message = form.json()["error"]
        assert "name, scopes" in message and "application/json" in message
        assert "got application/x-www-form-urlencoded" in message
        assert not message.startswith(":")
        query = await admin.post("/api/v1/buckets", params={"name": "x"})
        assert_error(query, 400, "InvalidArgument")
        message = query.json()["error"]
        assert message.startswith("body: required:") and "fields name" in message
        assert "application/json" in message and "query parameters" in message
        broken = await admin.post(
            "/api/v1/tokens", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert broken.json()["error"].startswith("body: not valid JSON")
        fields = await admin.post("/api/v1/tokens", json={"name": 5})
        assert (
            fields.json()["error"] == "name: Input should be a valid string; scopes: Field required"
        )
