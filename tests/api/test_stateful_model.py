"""A stateful model of one bucket, checked against the real app after every step.

The oracle is a dict: key -> its versions (oldest first) and whether the key is in the
trash. Hypothesis drives uploads, overwrites, deletes, restores, permanent version
deletes and garbage collection; after each step every key's download, version list and
the bucket listing must match the model exactly.

Hypothesis state machines are synchronous, so each example runs the app on an anyio
blocking portal (an event loop in a worker thread) with its own data directory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.api.conftest import ADMIN, assert_error, make_settings
from tfstorage.api.app import create_app

BUCKET = "artifacts"
# Byte order matters for the listing: "a" < "a/b" < "model.bin" < the unicode key.
KEYS = ("a", "a/b", "model.bin", "données/ключ-🔑.bin")
SHARED_BODIES = (b"", b"x", b"hello", b"\x00\x00\x00")

keys = st.sampled_from(KEYS)
# Mostly a handful of shared bodies, so uploads often deduplicate against stored bytes.
bodies = st.sampled_from(SHARED_BODIES) | st.binary(max_size=64)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def path_of(key: str) -> str:
    return quote(key, safe="/")


@dataclass
class ModelVersion:
    file_id: str
    data: bytes


@dataclass
class ModelKey:
    versions: list[ModelVersion] = field(default_factory=list)  # oldest first
    deleted: bool = False

    @property
    def head(self) -> ModelVersion:
        return self.versions[-1]


class BucketModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, ModelKey] = {key: ModelKey() for key in KEYS}
        # sha256 of every blob row in the index: rows stay (refcount 0) after their last
        # version is deleted, until garbage collection claims them.
        self.blob_rows: set[str] = set()
        self.gone_file_ids: list[str] = []
        self._resources = contextlib.ExitStack()
        try:
            tmp = self._resources.enter_context(tempfile.TemporaryDirectory())
            self.app: FastAPI = create_app(make_settings(Path(tmp)))
            self.portal: BlockingPortal = self._resources.enter_context(
                start_blocking_portal(backend="asyncio")
            )
            self._resources.enter_context(
                self.portal.wrap_async_context_manager(self.app.router.lifespan_context(self.app))
            )
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            self.client = self._resources.enter_context(
                self.portal.wrap_async_context_manager(
                    httpx.AsyncClient(
                        transport=transport, base_url="http://testserver", headers=ADMIN
                    )
                )
            )
        except BaseException:
            self._resources.close()
            raise

    def teardown(self) -> None:
        self._resources.close()

    # helpers -------------------------------------------------------------------------
    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        call = functools.partial(self.client.request, method, url, **kwargs)
        return self.portal.call(call)

    def get_all(self, urls: list[str]) -> list[httpx.Response]:
        """GET several URLs in one trip to the event loop thread."""

        async def fetch() -> list[httpx.Response]:
            return [await self.client.get(url) for url in urls]

        return self.portal.call(fetch)

    def all_versions(self) -> list[tuple[str, ModelVersion]]:
        return [(key, v) for key, state in self.model.items() for v in state.versions]

    def live_shas(self) -> set[str]:
        return {sha256(v.data) for _, v in self.all_versions()}

    def check_file_info(
        self, info: dict[str, Any], key: str, data: bytes, *, latest: bool, deleted: bool
    ) -> None:
        assert info["bucket"] == BUCKET and info["key"] == key
        assert info["filename"] == key.rsplit("/", 1)[-1]
        assert info["size"] == info["size_bytes"] == len(data)
        assert info["etag"] == md5(data)
        assert info["sha256"] == sha256(data)
        assert info["version_id"] == info["file_id"]
        assert info["is_latest"] is latest
        assert info["deleted"] is deleted

    def _put(self, key: str, body: bytes) -> None:
        response = self.request("PUT", f"/api/v1/objects/{BUCKET}/{path_of(key)}", content=body)
        assert response.status_code == 200, response.text
        info = response.json()
        self.check_file_info(info, key, body, latest=True, deleted=False)
        assert info["deduplicated"] is (sha256(body) in self.blob_rows)
        assert info["file_id"] not in {v.file_id for _, v in self.all_versions()}
        self.blob_rows.add(sha256(body))
        state = self.model[key]
        state.versions.append(ModelVersion(info["file_id"], body))
        state.deleted = False

    # rules ---------------------------------------------------------------------------
    @rule(key=keys, body=bodies)
    def upload(self, key: str, body: bytes) -> None:
        self._put(key, body)

    @precondition(lambda self: any(s.versions for s in self.model.values()))
    @rule(data=st.data(), body=bodies)
    def overwrite(self, data: st.DataObject, body: bytes) -> None:
        key = data.draw(st.sampled_from([k for k in KEYS if self.model[k].versions]))
        self._put(key, body)

    @precondition(lambda self: any(s.versions for s in self.model.values()))
    @rule(data=st.data())
    def overwrite_with_own_bytes(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from([k for k in KEYS if self.model[k].versions]))
        self._put(key, self.model[key].head.data)

    @rule(key=keys)
    def delete_key(self, key: str) -> None:
        response = self.request("DELETE", f"/api/v1/delete/{BUCKET}/{path_of(key)}")
        state = self.model[key]
        if not state.versions or state.deleted:
            assert_error(response, 404, "NoSuchKey")
            return
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["success"], body["key"], body["file_id"]) == (True, key, state.head.file_id)
        state.deleted = True

    @rule(key=keys)
    def restore_key(self, key: str) -> None:
        response = self.request("POST", f"/api/v1/restore/{BUCKET}/{path_of(key)}")
        state = self.model[key]
        if not state.versions:
            assert_error(response, 404, "NoSuchKey")
            return
        assert response.status_code == 200, response.text
        info = response.json()
        self.check_file_info(info, key, state.head.data, latest=True, deleted=False)
        assert info["file_id"] == state.head.file_id
        state.deleted = False

    @precondition(lambda self: any(s.versions for s in self.model.values()))
    @rule(data=st.data())
    def restore_version(self, data: st.DataObject) -> None:
        key, old = data.draw(st.sampled_from(self.all_versions()))
        response = self.request(
            "POST", f"/api/v1/restore/{BUCKET}/{path_of(key)}", params={"version_id": old.file_id}
        )
        assert response.status_code == 200, response.text
        info = response.json()
        self.check_file_info(info, key, old.data, latest=True, deleted=False)
        assert info["file_id"] != old.file_id  # a new version; history is immutable
        state = self.model[key]
        state.versions.append(ModelVersion(info["file_id"], old.data))
        state.deleted = False

    @precondition(lambda self: any(s.versions for s in self.model.values()))
    @rule(data=st.data(), other=keys)
    def restore_version_of_another_key(self, data: st.DataObject, other: str) -> None:
        key, old = data.draw(st.sampled_from(self.all_versions()))
        if other == key:
            return
        response = self.request(
            "POST", f"/api/v1/restore/{BUCKET}/{path_of(other)}", params={"version_id": old.file_id}
        )
        assert_error(response, 404, "NoSuchKey")

    @precondition(lambda self: any(s.versions for s in self.model.values()))
    @rule(data=st.data(), collect=st.booleans())
    def delete_version(self, data: st.DataObject, collect: bool) -> None:
        key, gone = data.draw(st.sampled_from(self.all_versions()))
        response = self.request("DELETE", f"/api/v1/files/{gone.file_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["key"], body["file_id"]) == (key, gone.file_id)
        state = self.model[key]
        state.versions.remove(gone)
        if not state.versions:
            state.deleted = False  # nothing left: the key is simply absent
        self.gone_file_ids.append(gone.file_id)
        if collect:
            # Straight away, so a reference count that is off shows up as lost bytes.
            self.collect_garbage()

    @precondition(lambda self: bool(self.gone_file_ids))
    @rule(data=st.data(), key=keys)
    def use_a_deleted_version(self, data: st.DataObject, key: str) -> None:
        file_id = data.draw(st.sampled_from(self.gone_file_ids))
        assert_error(self.request("DELETE", f"/api/v1/files/{file_id}"), 404, "NoSuchVersion")
        assert_error(self.request("GET", f"/api/v1/files/{file_id}"), 404, "NoSuchVersion")
        response = self.request(
            "POST", f"/api/v1/restore/{BUCKET}/{path_of(key)}", params={"version_id": file_id}
        )
        assert_error(response, 404, "NoSuchVersion")

    @rule()
    def collect_garbage(self) -> None:
        report = self.portal.call(self.app.state.storage.gc.run_once)
        live = self.live_shas()
        assert report.unreferenced_blobs == len(self.blob_rows - live)
        assert report.purged_versions == 0  # nothing is past RETENTION_DAYS
        self.blob_rows &= live
        # Shared bytes must survive: every remaining version still downloads by id.
        remaining = [version for _, version in self.all_versions()]
        urls = [f"/api/v1/files/download/{v.file_id}" for v in remaining]
        for version, response in zip(remaining, self.get_all(urls), strict=True):
            assert response.status_code == 200, response.text
            assert response.content == version.data

    # invariants ----------------------------------------------------------------------
    @invariant()
    def store_matches_model(self) -> None:
        paths = [f"{BUCKET}/{path_of(key)}" for key in KEYS]
        responses = self.get_all(
            [f"/api/v1/download/{p}" for p in paths]
            + [f"/api/v1/versions/{p}" for p in paths]
            + [f"/api/v1/list/{BUCKET}"]
        )
        downloads, version_lists, listing = responses[:4], responses[4:8], responses[8]

        for key, download, listed in zip(KEYS, downloads, version_lists, strict=True):
            state = self.model[key]
            if state.versions and not state.deleted:
                assert download.status_code == 200, download.text
                assert download.content == state.head.data
                assert download.headers["etag"] == f'"{md5(state.head.data)}"'
            else:
                assert_error(download, 404, "NoSuchKey")

            if not state.versions:
                assert_error(listed, 404, "NoSuchKey")
                continue
            assert listed.status_code == 200, listed.text
            versions = listed.json()["versions"]
            expected = list(reversed(state.versions))  # newest first
            assert [v["file_id"] for v in versions] == [v.file_id for v in expected]
            for index, (info, version) in enumerate(zip(versions, expected, strict=True)):
                self.check_file_info(
                    info, key, version.data, latest=index == 0, deleted=state.deleted
                )

        assert listing.status_code == 200, listing.text
        body = listing.json()
        visible = sorted(
            (k for k, s in self.model.items() if s.versions and not s.deleted),
            key=lambda k: k.encode("utf-8"),
        )
        assert [o["key"] for o in body["objects"]] == visible
        for obj in body["objects"]:
            head = self.model[obj["key"]].head
            assert (obj["size"], obj["etag"], obj["file_id"]) == (
                len(head.data),
                md5(head.data),
                head.file_id,
            )
        assert body["truncated"] is False and body["common_prefixes"] == []

    @invariant()
    def usage_counters_match_model(self) -> None:
        # /api/v1/stats reads the usage counters (issue 11); the check recomputes them.
        stats, check = self.get_all(["/api/v1/stats", "/api/v1/storage/counters"])
        figures = stats.json()["buckets"][BUCKET]
        live = [s.head for s in self.model.values() if s.versions and not s.deleted]
        every = [v for s in self.model.values() for v in s.versions]
        assert (figures["objects"], figures["size_bytes"]) == (
            len(live),
            sum(len(v.data) for v in live),
        )
        assert (figures["versions"], figures["versions_size_bytes"]) == (
            len(every),
            sum(len(v.data) for v in every),
        )
        assert check.json()["differences"] == []


BucketModel.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBucketModel = BucketModel.TestCase
