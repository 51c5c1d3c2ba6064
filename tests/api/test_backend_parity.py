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
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import DBAPIError

from tests.api.conftest import ADMIN, make_settings
from tests.index import conftest as index_fixtures
from tfstorage.api.app import create_app

pytestmark = pytest.mark.postgres

postgres_server = index_fixtures.postgres_server  # session-wide throwaway databases

BUCKET = "artifacts"
PARITY = settings(
    max_examples=int(os.environ.get("PARITY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_serial = itertools.count()
# Listed with generated markers: both backends must order keys by their UTF-8 bytes.
ORDER_FOLDER = "parity/order/"
ORDER_KEYS = [
    ORDER_FOLDER + k
    for k in (
        "A",
        "a",
        "a b",
        "a/b",
        "ab",
        "e\u0301",
        "\u00e9",
        "\u212b",
        "z",
        "\U0001f600",
        "\uffee",
    )
]


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
        self._scratch: dict[str, str] = {}
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=ADMIN
        )

    def scratch(self, name: str) -> str:
        """One object per test and backend whose metadata, tags or content type the
        examples overwrite (an upload per example would make the test slow)."""
        if name not in self._scratch:
            r = self.request("PUT", f"/api/v1/objects/{BUCKET}/parity/scratch-{name}", content=b"x")
            self._scratch[name] = r.json()["file_id"]
        return self._scratch[name]

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        call = functools.partial(self.client.request, method, url, **kwargs)
        response: httpx.Response = self.portal.call(call)
        assert response.status_code < 500, f"{self.name} {method} {url}: {response.text}"
        return response


@pytest.fixture(scope="module")
def backends(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: index_fixtures.PostgresServer
) -> Iterator[tuple[Backend, Backend]]:
    urls = {"sqlite": None, "postgres": database_with_a_language_collation(postgres_server)}
    with start_blocking_portal() as portal, contextlib.ExitStack() as stack:
        made: list[Backend] = []
        for name, url in urls.items():
            extra = {"database_url": url} if url else {}
            app = create_app(make_settings(tmp_path_factory.mktemp(name), **extra))
            stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
            backend = Backend(name, app, portal)
            stack.enter_context(portal.wrap_async_context_manager(backend.client))
            made.append(backend)
            for key in ORDER_KEYS:
                r = backend.request("PUT", f"/api/v1/objects/{BUCKET}/{quote(key)}", content=b"o")
                assert r.status_code == 200, r.text
        yield made[0], made[1]


def database_with_a_language_collation(server: index_fixtures.PostgresServer) -> str:
    """A database whose default collation is a language's (ICU en-US), as production
    clusters are often created: text compared or ordered without the index's explicit
    collation "C" would then disagree with SQLite's byte order and show up here."""
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    try:
        return server.create_database(icu)
    except DBAPIError:  # before PostgreSQL 15, or built without ICU
        return server.create_database()


def unique(prefix: str) -> str:
    """A fresh key per example, so examples never see each other's objects."""
    return f"parity/{prefix}-{next(_serial)}"


def json_body(value: object) -> dict[str, Any]:
    return {
        "content": json.dumps(value, ensure_ascii=True, allow_nan=True),
        "headers": {"Content-Type": "application/json"},
    }


def with_query(path: str, **params: Any) -> str:
    """`path?query` as a client sends it; lone surrogates go out as the raw bytes a
    broken client would send (httpx itself refuses to encode them)."""
    return f"{path}?{urlencode(params, doseq=True, encoding='utf-8', errors='surrogatepass')}"


def answer(response: httpx.Response, *fields: str) -> Answer:
    is_json = response.headers.get("content-type", "").startswith("application/json")
    body = response.json() if response.content and is_json else None
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
    -0.0 and 0.0 differ, and so does the order of an object's keys."""
    if isinstance(value, Answer):
        return (value.status, value.code, canonical(value.value))
    if isinstance(value, dict):
        return [(k, canonical(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, float):
        return ("float", math.copysign(1.0, value), repr(value))
    if isinstance(value, bool | int):
        return (type(value).__name__, value)
    return value


def as_stored(value: object) -> object:
    """What the service promises to give back for accepted metadata."""
    if isinstance(value, dict):
        return {k: as_stored(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [as_stored(v) for v in value]
    if isinstance(value, float) and value == 0.0:
        return 0.0
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
@example({"bb": 1, "a": 2, "c": {"zz": 1, "y": [{"b": 0, "a": 1}]}})  # jsonb reorders keys
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
    if result.status == 200:  # given back as sent: keys sorted, -0.0 as 0.0, nothing else
        answered, stored = result.value
        assert canonical(answered) == canonical(as_stored(metadata))
        assert canonical(stored) == canonical(as_stored(metadata))


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
        file_id = backend.scratch("meta-put")
        before = backend.request("GET", f"/api/v1/files/{file_id}").json()["metadata"]
        update = backend.request(
            "PUT", f"/api/v1/files/{file_id}", **json_body({"metadata": metadata})
        )
        stored = backend.request("GET", f"/api/v1/files/{file_id}").json()["metadata"]
        if update.status_code >= 300:
            assert stored == before, "a refused update changed the metadata"
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


# --- tags ------------------------------------------------------------------------------

tag_maps = st.dictionaries(texts, texts, max_size=3)


@PARITY
@given(tag_maps)
@example({"a": "\x00"})
@example({"k ": " v "})
def test_tags_are_stored_alike(backends: tuple[Backend, Backend], tags: dict[str, str]) -> None:
    def run(backend: Backend) -> Answer:
        file_id = backend.scratch("tags")
        before = backend.request("GET", f"/api/v1/files/{file_id}").json()["tags"]
        update = backend.request("PUT", f"/api/v1/files/{file_id}", **json_body({"tags": tags}))
        stored = backend.request("GET", f"/api/v1/files/{file_id}").json()["tags"]
        if update.status_code >= 300:
            assert stored == before, "a refused update changed the tags"
            return answer(update)
        tag_filter = [f"{k}={v}" for k, v in stored.items()]
        found = backend.request("GET", with_query("/api/v1/files", bucket=BUCKET, tag=tag_filter))
        hits = answer(found, "files")
        if hits.status == 200:  # a tag found by its own key=value
            hits = Answer(200, None, [f["file_id"] == file_id for f in hits.value["files"]])
        return Answer(update.status_code, None, (stored, hits))

    same_on_both(backends, run)


@PARITY
@given(st.lists(texts, max_size=3))
@example(["a=\x00"])
def test_tag_form_field_is_stored_alike(
    backends: tuple[Backend, Backend], items: list[str]
) -> None:
    def run(backend: Backend) -> Answer:
        r = backend.request(
            "POST",
            "/api/v1/upload",
            files={"file": ("f.bin", b"x")},
            data={"bucket": BUCKET, "key": unique("tag-form"), "tags": json.dumps(items)},
        )
        return answer(r, "tags")

    same_on_both(backends, run)


# --- keys, content types ---------------------------------------------------------------


def key_path(key: str) -> str:
    # Lone surrogates go out as the bytes a broken client would send.
    return quote(key.encode("utf-8", "surrogatepass"), safe="/")


@PARITY
@given(texts)
@example("a\x00b")
@example("caf\u00e9/\u212b")
@example("trailing ")
@example("\u00e9" * 480)  # with its folder, just under 1024 bytes
@example("\u00e9" * 600)  # over 1024 bytes: KeyTooLong
def test_keys_are_stored_alike(backends: tuple[Backend, Backend], name: str) -> None:
    def run(backend: Backend) -> Answer:
        folder = unique("keys")
        r = backend.request(
            "PUT", f"/api/v1/objects/{BUCKET}/{folder}/{key_path(name)}", content=b"x"
        )
        listed = backend.request("GET", f"/api/v1/list/{BUCKET}", params={"prefix": folder + "/"})
        keys = [o["key"].removeprefix(folder + "/") for o in listed.json()["objects"]]
        if r.status_code >= 300:
            assert keys == [], "a refused key was stored"
            return answer(r)
        return Answer(r.status_code, None, (r.json()["key"].removeprefix(folder + "/"), keys))

    result = same_on_both(backends, run)
    if result.status == 200:
        sent, (stored, keys) = name, result.value
        assert keys == [stored] and stored == sent, "not given back as sent"


@PARITY
@given(texts)
@example("text/plain; charset=\x00")
@example("a/b\x00")
def test_content_types_are_stored_alike(
    backends: tuple[Backend, Backend], content_type: str
) -> None:
    def run(backend: Backend) -> Answer:
        file_id = backend.scratch("ctype")
        before = backend.request("GET", f"/api/v1/files/{file_id}").json()["content_type"]
        update = backend.request(
            "PUT", f"/api/v1/files/{file_id}", **json_body({"content_type": content_type})
        )
        stored = backend.request("GET", f"/api/v1/files/{file_id}").json()["content_type"]
        if update.status_code >= 300:
            assert stored == before, "a refused update changed the content type"
        search = backend.request(
            "GET", with_query("/api/v1/files", bucket=BUCKET, content_type=content_type)
        )
        header = None
        raw = content_type.encode("latin-1", "ignore")
        if raw.decode("latin-1") == content_type:
            # As a header too, where HTTP allows the text in one.
            put = backend.request(
                "PUT",
                f"/api/v1/objects/{BUCKET}/{unique('ctype-header')}",
                content=b"x",
                headers={"Content-Type": raw},
            )
            header = answer(put, "content_type")
        return Answer(
            update.status_code, answer(update).code, (stored, answer(search).code, header)
        )

    same_on_both(backends, run)


# --- the other free text: descriptions, token names, filters, markers, batch keys ------


@PARITY
@given(texts, texts)
@example("a\x00b", "t\x00")
@example("\U0001f600" * 1024, "\u00e9" * 255)  # at the limits, in characters
@example("\U0001f600" * 1025, "\u00e9" * 256)  # one over
def test_descriptions_and_token_names_are_stored_alike(
    backends: tuple[Backend, Backend], description: str, name: str
) -> None:
    bucket = f"parity-{next(_serial)}"

    def run(backend: Backend) -> Answer:
        made = backend.request(
            "POST", "/api/v1/buckets", **json_body({"name": bucket, "description": description})
        )
        got = backend.request("GET", f"/api/v1/buckets/{bucket}")
        if made.status_code >= 300:
            assert got.status_code == 404, "a refused bucket was created"
        else:
            backend.request("DELETE", f"/api/v1/buckets/{bucket}")
        token = backend.request(
            "POST",
            "/api/v1/tokens",
            **json_body({"name": name, "owner": name, "prefix": name, "scopes": ["read"]}),
        )
        return Answer(
            made.status_code,
            answer(made).code,
            (answer(got, "description"), answer(token, "name", "owner", "prefix")),
        )

    same_on_both(backends, run)


@PARITY
@given(texts, texts)
@example("\x00", "\x00")
@example("a\ud800", "b")
@example("e", "\u212b")
def test_filters_and_markers_answer_alike(
    backends: tuple[Backend, Backend], first: str, second: str
) -> None:
    def run(backend: Backend) -> list[Answer]:
        listed = backend.request(
            "GET",
            with_query(f"/api/v1/list/{BUCKET}", prefix=ORDER_FOLDER, marker=first, delimiter="/"),
        )
        keys = answer(listed, "objects", "common_prefixes")
        if keys.status == 200:  # byte order on both: the keys after the marker, in order
            keys = Answer(
                200,
                None,
                ([o["key"] for o in keys.value["objects"]], keys.value["common_prefixes"]),
            )
        search = backend.request(
            "GET", with_query("/api/v1/files", bucket=BUCKET, prefix=first, marker=second)
        )
        filtered = backend.request(
            "GET", with_query("/api/v1/files", content_type=first, tag=f"k={second}")
        )
        batch = backend.request(
            "POST",
            "/api/v1/batch/delete",
            **json_body({"bucket": BUCKET, "keys": [f"parity/none/{first}", second]}),
        )
        return [
            keys,
            answer(search, "truncated"),
            answer(filtered, "truncated"),
            answer(batch, "deleted", "failed"),
        ]

    sqlite, postgres = backends
    a, b = run(sqlite), run(postgres)
    assert canonical(a) == canonical(b), f"sqlite: {a}\npostgres: {b}"


def segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@PARITY
@given(texts)
@example("\x00")
@example("a\ud800")
def test_identifiers_and_scopes_answer_alike(backends: tuple[Backend, Backend], text: str) -> None:
    """Ids in paths, bucket and version filters: unknown or refused alike, never a 500."""
    order_key = quote(ORDER_KEYS[0])

    def run(backend: Backend) -> list[Answer]:
        gets = [
            f"/api/v1/files/{segment(text)}",
            f"/api/v1/files/{segment(text)}/retention",
            f"/api/v1/uploads/{segment(text)}",
            f"/api/v1/jobs/{segment(text)}",
            f"/api/v1/buckets/{segment(text)}",
            with_query(f"/api/v1/download/{BUCKET}/{order_key}", version_id=text),
            with_query(f"/api/v1/versions/{BUCKET}/{order_key}", version_id=text),
            with_query("/api/v1/audit", bucket=text),
            with_query("/api/v1/uploads", bucket=text),
            with_query("/api/v1/storage/stats", bucket=text),
            with_query(f"/api/v1/buckets/{BUCKET}/files", prefix=ORDER_FOLDER, marker=text),
            with_query(f"/api/v1/list/{BUCKET}", prefix=ORDER_FOLDER, delimiter=text[:1]),
            with_query("/api/v1/files", bucket=text),
            f"/api/v1/list/{segment(text)}",
            with_query(f"/api/v1/archive/{BUCKET}", prefix=ORDER_FOLDER + text),
        ]
        answers = [answer(backend.request("GET", url)) for url in gets]
        answers.append(answer(backend.request("DELETE", f"/api/v1/tokens/{segment(text)}")))
        copy = {"bucket": BUCKET, "prefix": text, "dest_bucket": BUCKET, "dest_prefix": text}
        answers.append(answer(backend.request("POST", "/api/v1/batch/copy", **json_body(copy))))
        answers.append(
            answer(
                backend.request(
                    "POST", with_query("/api/v1/lifecycle/run", dry_run="true", bucket=text)
                )
            )
        )
        return [strip_volatile(a) for a in answers]

    sqlite, postgres = backends
    a, b = run(sqlite), run(postgres)
    assert canonical(a) == canonical(b), f"sqlite: {a}\npostgres: {b}"


def strip_volatile(a: Answer) -> Answer:
    """Keep what both backends must agree on: status and code (bodies carry ids/times)."""
    return Answer(a.status, a.code, None)


@PARITY
@given(texts, st.sampled_from(["prefix", "key_pattern", "content_type", "tag", "pattern"]))
@example("\x00", "prefix")
@example("a\x00", "tag")
def test_lifecycle_rules_are_stored_alike(
    backends: tuple[Backend, Backend], text: str, where: str
) -> None:
    rule: dict[str, Any] = {"id": "r1", "expire_days": 30, "filter": {}}
    if where == "tag":
        rule["filter"]["tags"] = {text: text}
    elif where == "pattern":
        rule["keep_last"] = {"count": 2, "group_pattern": text}
    else:
        rule["filter"][where] = text

    def run(backend: Backend) -> Answer:
        path = f"/api/v1/buckets/{BUCKET}/lifecycle"
        before = backend.request("GET", path).json()["rules"]
        put = backend.request("PUT", path, **json_body({"rules": [rule]}))
        stored = backend.request("GET", path).json()["rules"]
        if put.status_code >= 300:
            assert stored == before, "a refused rule set replaced the stored one"
        backend.request("DELETE", path)
        return Answer(put.status_code, answer(put).code, stored)

    same_on_both(backends, run)


@PARITY
@given(texts, tag_maps)
@example("a\x00", {})
@example("text/plain", {"k": "\x00"})
def test_upload_sessions_and_presigns_answer_alike(
    backends: tuple[Backend, Backend], text: str, tags: dict[str, str]
) -> None:
    def run(backend: Backend) -> list[Answer]:
        body = {"bucket": BUCKET, "key": unique("session"), "content_type": text, "tags": tags}
        made = backend.request("POST", "/api/v1/uploads", **json_body(body))
        session = answer(made, "content_type", "tags")
        if made.status_code < 300:
            backend.request("DELETE", f"/api/v1/uploads/{made.json()['upload_id']}")
        keyed = {"bucket": BUCKET, "key": f"parity/session/{text}"}
        named = backend.request("POST", "/api/v1/uploads", **json_body(keyed))
        if named.status_code < 300:
            backend.request("DELETE", f"/api/v1/uploads/{named.json()['upload_id']}")
        presign = backend.request(
            "POST", "/api/v1/presign", **json_body({"method": "PUT", **keyed})
        )
        return [session, answer(named, "key"), answer(presign, "method")]

    sqlite, postgres = backends
    a, b = run(sqlite), run(postgres)
    assert canonical(a) == canonical(b), f"sqlite: {a}\npostgres: {b}"
