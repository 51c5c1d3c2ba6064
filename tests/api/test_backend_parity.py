"""The two index backends agree: the same generated values, through the real app on
SQLite and on PostgreSQL, give the same answer (status, code and the value read back).

Every text value a client can send that reaches the index is covered: user metadata (the
`X-Metadata` header, the `metadata` form field, `PUT /api/v1/files/{id}`, an upload
session), tags, keys, content types, bucket descriptions, token names, search filters,
listing markers and batch keys. A value is either stored and given back exactly as sent
on both, or refused by both with the same 400 before it reaches the index; never a 5xx.

One app per backend for the module (blobs on local disk: the blob store is not what is
compared), driven from Hypothesis' synchronous tests through an anyio blocking portal.
JSON bodies are sent with `ensure_ascii=True`, so lone surrogates travel as `\\ud800`
escapes exactly as a hostile client would send them.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.api.conftest import ADMIN, make_settings
from tests.index import conftest as index_fixtures
from tfstorage.api.app import create_app

pytestmark = pytest.mark.postgres

postgres_server = index_fixtures.postgres_server  # session-wide throwaway databases

BUCKET = "artifacts"
PARITY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_serial = itertools.count()


@dataclass(frozen=True)
class Answer:
    """What a client can observe of one request: status, error code, relevant body."""

    status: int
    code: str | None
    value: Any


class Backend:
    """One real app on one index backend, called from synchronous test code."""

    def __init__(self, name: str, app: FastAPI, portal: BlockingPortal) -> None:
        self.name = name
        self.app = app
        self.portal = portal
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=ADMIN
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        call = functools.partial(self.client.request, method, url, **kwargs)
        response: httpx.Response = self.portal.call(call)
        assert response.status_code < 500, f"{self.name}: {response.text}"
        return response


@pytest.fixture(scope="module")
def backends(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: index_fixtures.PostgresServer
) -> Iterator[tuple[Backend, Backend]]:
    urls = {
        "sqlite": None,
        "postgres": postgres_server.create_database(),
    }
    with start_blocking_portal() as portal, contextlib.ExitStack() as stack:
        made: list[Backend] = []
        for name, url in urls.items():
            extra = {"database_url": url} if url else {}
            app = create_app(make_settings(tmp_path_factory.mktemp(name), **extra))
            stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
            backend = Backend(name, app, portal)
            stack.enter_context(portal.wrap_async_context_manager(backend.client))
            made.append(backend)
        yield made[0], made[1]


def unique(prefix: str) -> str:
    """A fresh key per example, so examples never see each other's objects."""
    return f"parity/{prefix}-{next(_serial)}"


def json_body(value: object) -> dict[str, Any]:
    return {
        "content": json.dumps(value, ensure_ascii=True, allow_nan=True),
        "headers": {"Content-Type": "application/json"},
    }


def answer(response: httpx.Response, *fields: str) -> Answer:
    body = response.json() if response.content else None
    if response.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str), response.text
        return Answer(response.status_code, body["code"], None)
    if isinstance(body, dict) and fields:
        return Answer(response.status_code, None, {f: body.get(f) for f in fields})
    return Answer(response.status_code, None, body)


def same_on_both(pair: tuple[Backend, Backend], run: Any) -> Answer:
    sqlite, postgres = pair
    a, b = run(sqlite), run(postgres)
    assert canonical(a) == canonical(b), f"sqlite: {a}\npostgres: {b}"
    return a


def canonical(value: object) -> object:
    """The exact JSON a client would parse: floats and ints stay apart (1.0 vs 1),
    -0.0 vs 0.0 differ, key order aside (JSON objects are unordered)."""
    if isinstance(value, Answer):
        return (value.status, value.code, canonical(value.value))
    if isinstance(value, dict):
        return sorted((k, canonical(v)) for k, v in value.items())
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float):
        return ("float", math.copysign(1.0, value), repr(value))
    if isinstance(value, bool | int):
        return (type(value).__name__, value)
    return value


# --- generated values ------------------------------------------------------------------

# Any code point, lone surrogates and NUL included; edge values are made likely.
EDGE_TEXT = ["", "\x00", "a\x00b", "\ud800", "\udfff", "\ufffd", "\u212b", "\u00c5", "a ", " "]
texts = st.one_of(
    st.sampled_from(EDGE_TEXT),
    st.text(max_size=12),
    st.text(st.characters(codec="utf-8"), max_size=12),
)
EDGE_NUMBERS = [
    0,
    -0.0,
    0.0,
    1.0,
    1e16,
    -1.5e300,
    1.7976931348623157e308,
    5e-324,
    2**63,
    -(2**64) - 1,
    10**40,
    float("inf"),
    float("nan"),
]
numbers = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers(),
    st.floats(),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
metadata_values = st.dictionaries(texts, json_values, max_size=4) | json_values


# --- metadata --------------------------------------------------------------------------


def read_back(backend: Backend, response: httpx.Response) -> Answer:
    """The stored version as a later GET sees it, or the refusal."""
    if response.status_code >= 300:
        return answer(response)
    file_id = response.json()["file_id"]
    stored = backend.request("GET", f"/api/v1/files/{file_id}")
    return Answer(
        response.status_code, None, (response.json()["metadata"], stored.json()["metadata"])
    )


@PARITY
@given(metadata_values)
@example({"a": "x\x00y"})
@example({"a\x00": 1})
@example({"f": [1e16, 1.7976931348623157e308, -0.0]})
@example({"big": 10**400})
def test_metadata_header_is_stored_alike(
    backends: tuple[Backend, Backend], metadata: object
) -> None:
    text = json.dumps(metadata, ensure_ascii=True, allow_nan=True)

    def run(backend: Backend) -> Answer:
        key = unique("meta-header")
        r = backend.request(
            "PUT", f"/api/v1/objects/{BUCKET}/{key}", content=b"x", headers={"X-Metadata": text}
        )
        result = read_back(backend, r)
        if r.status_code >= 300:  # refused: nothing stored under the key
            gone = backend.request("GET", f"/api/v1/versions/{BUCKET}/{key}")
            assert gone.status_code == 404, gone.text
        return result

    result = same_on_both(backends, run)
    if result.status == 200:
        sent, stored = result.value
        assert canonical(stored) == canonical(sent)


@PARITY
@given(metadata_values)
@example({"a": "\x00"})
def test_metadata_form_field_is_stored_alike(
    backends: tuple[Backend, Backend], metadata: object
) -> None:
    text = json.dumps(metadata, ensure_ascii=True, allow_nan=True)

    def run(backend: Backend) -> Answer:
        key = unique("meta-form")
        r = backend.request(
            "POST",
            "/api/v1/upload",
            files={"file": ("f.bin", b"x")},
            data={"bucket": BUCKET, "key": key, "metadata": text},
        )
        return read_back(backend, r)

    same_on_both(backends, run)


@PARITY
@given(metadata_values)
@example({"a": "\x00"})
def test_metadata_update_is_stored_alike(
    backends: tuple[Backend, Backend], metadata: object
) -> None:
    def run(backend: Backend) -> Answer:
        r = backend.request("PUT", f"/api/v1/objects/{BUCKET}/{unique('meta-put')}", content=b"x")
        file_id = r.json()["file_id"]
        update = backend.request(
            "PUT", f"/api/v1/files/{file_id}", **json_body({"metadata": metadata})
        )
        stored = backend.request("GET", f"/api/v1/files/{file_id}").json()["metadata"]
        if update.status_code >= 300:
            assert stored == {}, "a refused update changed the metadata"
        return Answer(update.status_code, answer(update).code, stored)

    same_on_both(backends, run)


@PARITY
@given(metadata_values)
@example({"a": "\x00"})
def test_upload_session_metadata_is_stored_alike(
    backends: tuple[Backend, Backend], metadata: object
) -> None:
    def run(backend: Backend) -> Answer:
        body = {"bucket": BUCKET, "key": unique("session"), "metadata": metadata}
        r = backend.request("POST", "/api/v1/uploads", **json_body(body))
        if r.status_code >= 300:
            return answer(r)
        upload_id = r.json()["upload_id"]
        got = backend.request("GET", f"/api/v1/uploads/{upload_id}").json()
        backend.request("DELETE", f"/api/v1/uploads/{upload_id}")
        return Answer(r.status_code, None, got.get("metadata"))

    same_on_both(backends, run)
