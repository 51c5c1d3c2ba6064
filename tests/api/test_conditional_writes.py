"""If-Match / If-None-Match on every write route, on local disk and on S3 (SeaweedFS).

Each refusal is a 412 PreconditionFailed JSON body, the previous version stays intact,
and the refused upload's bytes are gone from the blob store at once (nothing for the
garbage collector to find either).
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import assert_error, stored_files
from tests.stored_blobs import pack_files
from tfstorage.config import Settings
from tfstorage.service.storage import Storage

pytestmark = pytest.mark.anyio

CREATE = {"If-None-Match": "*"}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def put(
    client: httpx.AsyncClient, key: str, data: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.put(f"/api/v1/objects/artifacts/{key}", content=data, headers=headers)


async def form(
    client: httpx.AsyncClient,
    key: str,
    data: bytes,
    headers: dict[str, str] | None = None,
    route: str = "/api/v1/upload",
) -> httpx.Response:
    fields = {"bucket": "artifacts", "key": key} if route != "/upload" else {"key": key}
    return await client.post(
        route, files={"file": ("f.bin", data)}, data=fields, headers=headers or {}
    )


async def latest(client: httpx.AsyncClient, key: str, bucket: str = "artifacts") -> bytes | None:
    r = await client.get(f"/api/v1/download/{bucket}/{key}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.content


async def nothing_for_gc(app: FastAPI, settings: Settings) -> list[str]:
    """The blob store's content, after checking that a GC run past the orphan grace
    finds nothing to remove: every stored blob is referenced. (Its compaction of the
    packs that refused uploads left dead records in counts as incomplete writes: one per
    pack file it removed or rewrote, and no other.)"""
    before = stored_files(settings)
    packs = set(pack_files(settings.blob_dir))
    storage: Storage = app.state.storage
    report = await storage.gc.run_once(now=time.time() + 2 * settings.orphan_grace_seconds)
    compacted = len(packs - set(pack_files(settings.blob_dir)))
    assert report.orphan_blobs == 0 and report.incomplete_writes == compacted, report
    assert stored_files(settings) == before
    return before


async def test_put_if_none_match_creates_only_once(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    first, second = os.urandom(2000), os.urandom(3000)
    r = await put(client, "once.bin", first, CREATE)
    assert r.status_code == 200, r.text
    assert r.json()["etag"] == md5(first)
    assert_error(await put(client, "once.bin", second, CREATE), 412, "PreconditionFailed")
    assert await latest(client, "once.bin") == first
    versions = (await client.get("/api/v1/versions/artifacts/once.bin")).json()["versions"]
    assert len(versions) == 1
    assert len(await nothing_for_gc(app, settings)) == 1
    # Deleted (in the trash) counts as absent.
    assert (await client.delete("/api/v1/delete/artifacts/once.bin")).status_code == 200
    assert (await put(client, "once.bin", second, CREATE)).status_code == 200
    assert await latest(client, "once.bin") == second


async def test_put_if_match_replaces_only_that_version(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    v1, v2, v3 = b"version one", b"version two", b"version three"
    # If-Match on a missing key fails (RFC 9110), even with '*'.
    for value in (md5(v1), "*"):
        assert_error(
            await put(client, "cas.bin", v1, {"If-Match": value}), 412, "PreconditionFailed"
        )
    assert (await put(client, "cas.bin", v1)).status_code == 200
    # Quoted or not, in a list, any case.
    for value in (f'"{md5(v1)}"', f'"{"0" * 32}", {md5(v1).upper()}'):
        r = await put(client, "cas.bin", v1, {"If-Match": value})
        assert r.status_code == 200, (value, r.text)
    r = await put(client, "cas.bin", v2, {"If-Match": md5(v1)})
    assert r.status_code == 200, r.text
    # A stale ETag: refused, the current version intact, nothing stored.
    files = stored_files(settings)
    assert_error(await put(client, "cas.bin", v3, {"If-Match": md5(v1)}), 412, "PreconditionFailed")
    # A weak ETag never matches (strong comparison).
    weak = {"If-Match": f'W/"{md5(v2)}"'}
    assert_error(await put(client, "cas.bin", v3, weak), 412, "PreconditionFailed")
    assert await latest(client, "cas.bin") == v2
    assert stored_files(settings) == files
    assert (await put(client, "cas.bin", v3, {"If-Match": "*"})).status_code == 200
    assert await latest(client, "cas.bin") == v3
    await nothing_for_gc(app, settings)


@pytest.mark.parametrize("route", ["/api/v1/upload", "/api/v1/upload/stream", "/upload"])
async def test_form_uploads_refused_after_their_bytes_are_staged_leave_nothing(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, route: str
) -> None:
    bucket = "artifacts" if route != "/upload" else settings.default_bucket
    old = os.urandom(5000)
    assert (await form(client, "form.bin", old, route=route)).status_code == 200
    files = stored_files(settings)
    # Judged when the form commits, i.e. after the file went to the blob store.
    r = await form(client, "form.bin", os.urandom(6000), CREATE, route=route)
    assert_error(r, 412, "PreconditionFailed")
    r = await form(client, "form.bin", os.urandom(6000), {"If-Match": "0" * 32}, route=route)
    assert_error(r, 412, "PreconditionFailed")
    assert stored_files(settings) == files
    assert await latest(client, "form.bin", bucket) == old
    r = await form(client, "form.bin", b"new", {"If-Match": md5(old)}, route=route)
    assert r.status_code == 200, r.text
    assert await latest(client, "form.bin", bucket) == b"new"
    await nothing_for_gc(app, settings)


async def test_a_refused_duplicate_keeps_the_shared_blob(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    shared, other = os.urandom(4000), os.urandom(4000)
    assert (await put(client, "a.bin", shared)).status_code == 200
    assert (await put(client, "b.bin", other)).status_code == 200
    # Same bytes as a.bin (dedup would share its blob) to a key that exists: refused
    # after staging; the fresh copy goes, the blob a.bin uses stays.
    assert_error(await form(client, "b.bin", shared, CREATE), 412, "PreconditionFailed")
    assert len(await nothing_for_gc(app, settings)) == 2
    assert await latest(client, "a.bin") == shared
    assert await latest(client, "b.bin") == other


async def test_malformed_conditions_are_400_before_anything_is_stored(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for headers in ({"If-Match": ""}, {"If-None-Match": '"unterminated'}, {"If-Match": "*, a"}):
        assert_error(await put(client, "bad.bin", b"x", headers), 400, "InvalidArgument")
        assert_error(await form(client, "bad.bin", b"x", headers), 400, "InvalidArgument")
    assert stored_files(settings) == []


async def test_files_upload_applies_the_condition_to_each_file(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    assert (await put(client, "many/exists.bin", b"old")).status_code == 200

    async def upload(atomic: bool) -> httpx.Response:
        return await client.post(
            "/api/v1/files/upload",
            files=[
                ("file", ("exists.bin", b"new bytes")),
                ("file", ("fresh.bin", f"fresh {atomic}".encode())),
            ],
            data={"bucket": "artifacts", "prefix": "many/", "atomic": str(atomic).lower()},
            headers=CREATE,
        )

    files = stored_files(settings)
    r = await upload(atomic=True)  # all or nothing: the whole request is refused
    assert_error(r, 412, "PreconditionFailed")
    assert stored_files(settings) == files
    assert await latest(client, "many/fresh.bin") is None
    r = await upload(atomic=False)
    assert r.status_code == 207, r.text
    results = {res["key"]: res for res in r.json()["results"]}
    assert results["many/exists.bin"]["status"] == 412
    assert results["many/exists.bin"]["error"]["code"] == "PreconditionFailed"
    assert results["many/fresh.bin"]["status"] == 201
    assert await latest(client, "many/exists.bin") == b"old"
    assert await latest(client, "many/fresh.bin") == b"fresh False"
    assert len(await nothing_for_gc(app, settings)) == 2


async def _open_upload(client: httpx.AsyncClient, key: str, data: bytes) -> dict[str, Any]:
    r = await client.post("/api/v1/uploads", json={"bucket": "checkpoints", "key": key})
    assert r.status_code == 201, r.text
    upload_id = r.json()["upload_id"]
    r = await client.put(f"/api/v1/uploads/{upload_id}/parts/1", content=data)
    assert r.status_code == 200, r.text
    return {"id": upload_id, "body": {"parts": [{"part_number": 1, "etag": md5(data)}]}}


async def test_resumable_completion_honours_the_headers(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    key = "run/cond.bin"
    old, new = os.urandom(3000), os.urandom(3500)
    assert (await client.put(f"/api/v1/objects/checkpoints/{key}", content=old)).status_code == 200
    upload = await _open_upload(client, key, new)
    url = f"/api/v1/uploads/{upload['id']}/complete"
    r = await client.post(url, json=upload["body"], headers=CREATE)
    assert_error(r, 412, "PreconditionFailed")
    assert await latest(client, key, "checkpoints") == old
    # The session stays open, as after any refused completion: complete it again...
    r = await client.post(url, json=upload["body"], headers={"If-Match": f'"{md5(old)}"'})
    assert r.status_code == 200, r.text
    assert await latest(client, key, "checkpoints") == new
    # ...or abort it: then nothing of it remains.
    upload = await _open_upload(client, key, os.urandom(100))
    url = f"/api/v1/uploads/{upload['id']}/complete"
    r = await client.post(url, json=upload["body"], headers={"If-Match": md5(old)})
    assert_error(r, 412, "PreconditionFailed")
    assert (await client.delete(f"/api/v1/uploads/{upload['id']}")).status_code == 204
    assert len(await nothing_for_gc(app, settings)) == 2  # old and new


async def test_delete_if_match_deletes_only_the_expected_latest(client: httpx.AsyncClient) -> None:
    v1, v2 = b"first", b"second"
    assert (await put(client, "del.bin", v1)).status_code == 200
    assert (await put(client, "del.bin", v2)).status_code == 200
    url = "/api/v1/delete/artifacts/del.bin"
    assert_error(await client.delete(url, headers={"If-Match": md5(v1)}), 412, "PreconditionFailed")
    assert await latest(client, "del.bin") == v2
    r = await client.delete(url, headers={"If-Match": f'"{md5(v2)}"'})
    assert r.status_code == 200, r.text
    assert await latest(client, "del.bin") is None
    # Deleted: no current version, so If-Match fails (412, not 404).
    assert_error(await client.delete(url, headers={"If-Match": "*"}), 412, "PreconditionFailed")
    file_id = (await client.get("/api/v1/versions/artifacts/del.bin")).json()["versions"][0]
    r = await client.delete(
        url, params={"version_id": file_id["file_id"]}, headers={"If-Match": md5(v2)}
    )
    assert_error(r, 400, "InvalidArgument")


async def test_restore_judges_the_latest_before_it(client: httpx.AsyncClient) -> None:
    v1, v2 = b"one", b"two"
    first = (await put(client, "res.bin", v1)).json()["file_id"]
    assert (await put(client, "res.bin", v2)).status_code == 200
    url = "/api/v1/restore/artifacts/res.bin"
    # Make v1 latest again, only over v2.
    r = await client.post(url, params={"version_id": first}, headers={"If-Match": md5(v1)})
    assert_error(r, 412, "PreconditionFailed")
    assert await latest(client, "res.bin") == v2
    r = await client.post(url, params={"version_id": first}, headers={"If-Match": md5(v2)})
    assert r.status_code == 200, r.text
    assert await latest(client, "res.bin") == v1
    # Undelete only if nobody re-created the key meanwhile.
    assert (await client.delete("/api/v1/delete/artifacts/res.bin")).status_code == 200
    assert_error(await client.post(url, headers={"If-Match": md5(v1)}), 412, "PreconditionFailed")
    r = await client.post(url, headers=CREATE)
    assert r.status_code == 200, r.text
    assert await latest(client, "res.bin") == v1
    assert_error(await client.post(url, headers=CREATE), 412, "PreconditionFailed")


async def test_batch_copy_refuses_the_headers(client: httpx.AsyncClient) -> None:
    assert (await put(client, "copy/src.bin", b"bytes")).status_code == 200
    body = {"bucket": "artifacts", "prefix": "copy/", "dest_bucket": "models"}
    r = await client.post("/api/v1/batch/copy", json=body, headers=CREATE)
    assert_error(r, 400, "InvalidArgument")
    assert await latest(client, "copy/src.bin", "models") is None


async def test_racing_completions_one_winner(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    # Both pass the early check (the key is absent); the commit decides.
    key = "run/raced.bin"
    payloads = [os.urandom(2000 + n) for n in range(4)]
    uploads = [await _open_upload(client, key, data) for data in payloads]
    answers: list[httpx.Response] = []
    loser_uploads: list[dict[str, Any]] = []

    async def finish(upload: dict[str, Any]) -> None:
        url = f"/api/v1/uploads/{upload['id']}/complete"
        answers.append(r := await client.post(url, json=upload["body"], headers=CREATE))
        if r.status_code == 412:
            loser_uploads.append(upload)

    async with anyio.create_task_group() as tasks:
        for upload in uploads:
            tasks.start_soon(finish, upload)
    assert sorted(r.status_code for r in answers) == [200, 412, 412, 412], [r.text for r in answers]
    winner = next(r for r in answers if r.status_code == 200).json()
    assert (
        await latest(client, key, "checkpoints")
        == payloads[[md5(p) for p in payloads].index(winner["etag"])]
    )
    losers = [r for r in answers if r.status_code == 412]
    if settings.storage_type == "local":
        # The parts are still there: a loser completes again, on top of the winner.
        retry = loser_uploads[0]
        r = await client.post(
            f"/api/v1/uploads/{retry['id']}/complete",
            json=retry["body"],
            headers={"If-Match": winner["etag"]},
        )
        assert r.status_code == 200, r.text
    else:
        # The engine's multipart upload assembled them: the answer says they are gone.
        # On a loaded machine a loser's early check can come after the winner's commit:
        # it is refused before assembly, its parts intact, and says only that.
        errors = [r.json()["error"] for r in losers]
        assert any("upload them again" in e for e in errors), errors
        assert all("upload them again" in e or "already exists" in e for e in errors), errors
    for upload in uploads:  # the losers' sessions are still open: abort them
        await client.delete(f"/api/v1/uploads/{upload['id']}")
    # The winner's blob, and on local disk the retried loser's.
    expected = 2 if settings.storage_type == "local" else 1
    assert len(await nothing_for_gc(app, settings)) == expected


async def test_routes_that_cannot_judge_the_headers_refuse_them(
    client: httpx.AsyncClient,
) -> None:
    # Ignoring them would run a "delete only if still X" unconditionally.
    assert (await put(client, "keep/a.bin", b"bytes")).status_code == 200
    file_id = (await client.get("/api/v1/files", params={"prefix": "keep/"})).json()["files"][0][
        "file_id"
    ]
    stale = {"If-Match": '"' + "0" * 32 + '"'}
    r = await client.post(
        "/api/v1/batch/delete", json={"bucket": "artifacts", "keys": ["keep/a.bin"]}, headers=stale
    )
    assert_error(r, 400, "InvalidArgument")
    r = await client.put(f"/api/v1/files/{file_id}", json={"tags": "a=b"}, headers=stale)
    assert_error(r, 400, "InvalidArgument")
    assert_error(
        await client.delete(f"/api/v1/files/{file_id}", headers=stale), 400, "InvalidArgument"
    )
    assert await latest(client, "keep/a.bin") == b"bytes"
    assert (await client.get(f"/api/v1/files/{file_id}")).json()["tags"] == {}
