"""Resumable multipart uploads through the API, on local disk and on S3 (SeaweedFS)."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN, assert_error, make_settings, stored_files
from tests.s3.fixtures import s3_settings_overrides
from tfstorage.api.app import create_app
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part that may be followed by another


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Like tests/api's, with room for a few 5 MiB parts."""
    overrides: dict[str, Any] = {"max_file_size": 40 * MiB}
    if request.param == "local":
        return make_settings(tmp_path, **overrides)
    seaweed = request.getfixturevalue("seaweedfs")
    prefix = request.getfixturevalue("s3_prefix")
    s3 = s3_settings_overrides(seaweed, seaweed.bucket, prefix=prefix)
    return make_settings(tmp_path, **s3, **overrides)


@asynccontextmanager
async def client_with(settings: Settings, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client on an app with other settings over the same storage."""
    application = create_app(settings.model_copy(update=overrides))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=ADMIN
        ) as c:
            c.app = application  # type: ignore[attr-defined]
            yield c


async def test_a_failure_inside_client_with_is_not_swallowed(settings: Settings) -> None:
    # The app's shutdown must let the error that ended its lifespan through, on every
    # backend: else a failing assertion under `client_with` passes unseen.
    seen = False
    try:
        async with client_with(settings) as client:
            assert (await client.get("/api/v1/uploads")).status_code == 200
            raise LookupError("must be seen")
    except* LookupError:  # (anyio's task group may wrap it)
        seen = True
    assert seen


def data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def create(client: httpx.AsyncClient, key: str = "run/ckpt.bin", **body: Any) -> str:
    r = await client.post("/api/v1/uploads", json={"bucket": "checkpoints", "key": key, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["upload_id"])


async def put_part(
    client: httpx.AsyncClient, upload_id: str, number: int, body: bytes, **headers: str
) -> httpx.Response:
    return await client.put(
        f"/api/v1/uploads/{upload_id}/parts/{number}", content=body, headers=headers
    )


async def send_parts(client: httpx.AsyncClient, upload_id: str, parts: dict[int, bytes]) -> None:
    for number, body in parts.items():
        r = await put_part(client, upload_id, number, body)
        assert r.status_code == 200, r.text


async def complete(
    client: httpx.AsyncClient, upload_id: str, parts: dict[int, bytes], **body: Any
) -> httpx.Response:
    listed = [{"part_number": n, "etag": md5(parts[n])} for n in sorted(parts)]
    return await client.post(
        f"/api/v1/uploads/{upload_id}/complete", json={"parts": listed, **body}
    )


def blob_count(settings: Settings) -> int:
    return len([f for f in stored_files(settings) if "/.parts/" not in f])


async def test_parallel_out_of_order_retried_parts_complete_whole(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    parts = {1: data(PART, 1), 2: data(PART + 3, 2), 3: data(PART, 3), 4: data(12345, 4)}
    whole = b"".join(parts[n] for n in sorted(parts))
    upload_id = await create(client, size=len(whole), metadata={"epoch": 3}, tags={"run": "a"})
    answers: dict[int, dict[str, Any]] = {}

    async def send(number: int) -> None:
        r = await put_part(client, upload_id, number, parts[number])
        assert r.status_code == 200, r.text
        answers[number] = r.json()

    async with anyio.create_task_group() as tg:
        for number in (4, 2, 3, 1):
            tg.start_soon(send, number)
    # A retried part (say the first answer was lost) replaces the earlier one.
    first_two = parts[2]
    parts[2] = data(PART + 3, 22)
    whole = b"".join(parts[n] for n in sorted(parts))
    await send(2)
    assert answers[2] == {
        "part_number": 2,
        "size": PART + 3,
        "etag": md5(parts[2]),
        "sha256": sha256(parts[2]),
    }
    assert md5(first_two) != answers[2]["etag"]

    r = await client.get(f"/api/v1/uploads/{upload_id}")
    assert r.status_code == 200
    session = r.json()
    assert [p["part_number"] for p in session["parts"]] == [1, 2, 3, 4]
    assert [(p["size"], p["etag"], p["sha256"]) for p in session["parts"]] == [
        (len(parts[n]), md5(parts[n]), sha256(parts[n])) for n in (1, 2, 3, 4)
    ]
    assert session["size"] == len(whole) and session["min_part_size"] == PART
    assert session["max_parts"] == 10_000

    r = await complete(client, upload_id, parts, sha256=sha256(whole))
    assert r.status_code == 200, r.text
    done = r.json()
    assert (done["size"], done["etag"], done["sha256"]) == (len(whole), md5(whole), sha256(whole))
    assert done["metadata"] == {"epoch": 3} and done["tags"] == {"run": "a"}
    assert (done["bucket"], done["key"]) == ("checkpoints", "run/ckpt.bin")
    # The same answer as a single upload.
    single = await client.put("/api/v1/objects/checkpoints/single.bin", content=b"x")
    assert set(done) == set(single.json())

    got = await client.get("/api/v1/download/checkpoints/run/ckpt.bin")
    assert got.status_code == 200 and got.content == whole
    assert got.headers["etag"].strip('"') == md5(whole)

    assert_error(await client.get(f"/api/v1/uploads/{upload_id}"), 404, "NoSuchUpload")
    # Completing twice: the session is gone with the first completion.
    assert_error(await complete(client, upload_id, parts), 404, "NoSuchUpload")
    leftovers = stored_files(settings)
    assert not [f for f in leftovers if "/.parts/" in f or "/.tmp/" in f]
    assert len(leftovers) == 2  # the two objects' blobs, no parts, no engine upload


async def test_declared_sha256_mismatch_shows_nothing_and_keeps_the_session(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    parts = {1: data(PART, 5), 2: data(100, 6)}
    whole = parts[1] + parts[2]
    upload_id = await create(client, key="bad.bin", sha256=sha256(b"something else"))
    await send_parts(client, upload_id, parts)
    r = await complete(client, upload_id, parts)
    assert_error(r, 400, "BadDigest")
    assert_error(
        await client.get("/api/v1/download/checkpoints/bad.bin"), 404, "NoSuchKey"
    )  # nothing visible
    assert blob_count(settings) == (0 if settings.storage_type == "local" else 1)  # the upload

    session = (await client.get(f"/api/v1/uploads/{upload_id}")).json()
    stored = {p["part_number"] for p in session["parts"]}
    # On disk the parts stay; an S3 engine used them up, so the client sends them again.
    assert stored == ({1, 2} if settings.storage_type == "local" else set())
    await send_parts(client, upload_id, {n: parts[n] for n in parts if n not in stored})
    r = await complete(client, upload_id, parts, sha256=sha256(whole))
    assert r.status_code == 200, r.text
    got = await client.get("/api/v1/download/checkpoints/bad.bin")
    assert got.content == whole


async def test_part_checksums_are_verified(client: httpx.AsyncClient, settings: Settings) -> None:
    upload_id = await create(client)
    good, bad = data(1000, 7), data(1000, 8)
    assert (await put_part(client, upload_id, 1, good)).status_code == 200
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = await put_part(client, upload_id, 1, bad, **{"Content-MD5": wrong_md5})
    assert_error(r, 400, "BadDigest")
    parts = (await client.get(f"/api/v1/uploads/{upload_id}")).json()["parts"]
    assert [p["etag"] for p in parts] == [md5(good)]  # the earlier part is kept

    r = await put_part(client, upload_id, 1, bad, **{"X-Checksum-SHA256": sha256(b"other")})
    assert_error(r, 400, "BadDigest")
    parts = (await client.get(f"/api/v1/uploads/{upload_id}")).json()["parts"]
    if settings.storage_type == "local":
        assert [p["etag"] for p in parts] == [md5(good)]
    else:
        # SeaweedFS does not check a signed payload hash, so the engine took the bytes
        # in place of the earlier part: that part is no longer listed as stored.
        assert parts in ([], [{"part_number": 1, "size": 1000, "etag": md5(good),
                                "sha256": sha256(good)}])  # fmt: skip
        assert (await put_part(client, upload_id, 1, good)).status_code == 200

    right = {
        "Content-MD5": base64.b64encode(hashlib.md5(bad).digest()).decode(),
        "X-Checksum-SHA256": sha256(bad),
    }
    assert (await put_part(client, upload_id, 1, bad, **right)).status_code == 200
    r = await complete(client, upload_id, {1: bad})
    assert r.status_code == 200 and r.json()["sha256"] == sha256(bad)
    assert_error(
        await put_part(client, upload_id, 1, bad, **{"Content-MD5": "nope"}), 404, "NoSuchUpload"
    )


async def test_bad_part_lists_are_refused_and_the_session_survives(
    client: httpx.AsyncClient,
) -> None:
    parts = {1: data(PART, 9), 2: data(10, 10), 3: data(20, 11)}
    upload_id = await create(client)
    await send_parts(client, upload_id, parts)
    url = f"/api/v1/uploads/{upload_id}/complete"

    def listing(*entries: tuple[int, str]) -> dict[str, Any]:
        return {"parts": [{"part_number": n, "etag": etag} for n, etag in entries]}

    e1, e2, e3 = md5(parts[1]), md5(parts[2]), md5(parts[3])
    cases = [
        (listing((1, e1), (2, md5(b"x"))), "InvalidPart"),
        (listing((1, e1), (4, e2)), "InvalidPart"),  # never uploaded
        (listing((2, e2), (1, e1)), "InvalidPartOrder"),
        (listing((1, e1), (1, e1)), "InvalidPartOrder"),
        (listing((1, e1), (2, e2), (3, e3)), "EntityTooSmall"),  # part 2 is not last
        (listing(), "InvalidPart"),
    ]
    for body, code in cases:
        assert_error(await client.post(url, json=body), 400, code)
    assert_error(await client.post(url, json={"parts": [{"part_number": 0, "etag": e1}]}), 400,
                 "InvalidArgument")  # fmt: skip
    # Quoted etags, as S3 clients send them, are fine; part 2 may be left out.
    r = await client.post(url, json=listing((1, f'"{e1}"'), (3, e3)))
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == sha256(parts[1] + parts[3])


async def test_size_limits_as_parts_arrive(settings: Settings) -> None:
    async with client_with(settings, max_file_size=12 * MiB) as client:
        r = await client.post(
            "/api/v1/uploads", json={"bucket": "checkpoints", "key": "k", "size": 12 * MiB + 1}
        )
        assert_error(r, 413, "EntityTooLarge")
        upload_id = await create(client)
        await send_parts(client, upload_id, {1: data(PART, 1), 2: data(PART, 2)})
        assert_error(await put_part(client, upload_id, 3, data(PART, 3)), 413, "EntityTooLarge")
        # Replacing a part counts its new size instead of the old one.
        assert (await put_part(client, upload_id, 2, data(PART + MiB, 4))).status_code == 200
        assert_error(await put_part(client, upload_id, 3, data(MiB + 1, 5)), 413,
                     "EntityTooLarge")  # fmt: skip
        assert (await put_part(client, upload_id, 3, data(MiB, 6))).status_code == 200
        session = (await client.get(f"/api/v1/uploads/{upload_id}")).json()
        assert [p["size"] for p in session["parts"]] == [PART, PART + MiB, MiB]

        declared = await create(client, key="declared", size=PART + 10)
        await send_parts(client, declared, {1: data(PART, 7)})
        assert_error(await put_part(client, declared, 2, data(11, 8)), 413, "EntityTooLarge")
        await send_parts(client, declared, {2: data(9, 8)})
        r = await complete(client, declared, {1: data(PART, 7), 2: data(9, 8)})
        assert_error(r, 400, "IncompleteBody")  # 10 bytes were declared for the rest
        r = await client.put(
            f"/api/v1/uploads/{declared}/parts/2",
            content=b"",
            headers={"Content-Length": str(13 * MiB)},
        )
        assert_error(r, 413, "EntityTooLarge")  # refused on the header, before any byte


async def test_quota_is_checked_as_parts_arrive(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/buckets", json={"name": "small", "quota_bytes": 8 * MiB})
    assert r.status_code == 201
    r = await client.post("/api/v1/uploads", json={"bucket": "small", "key": "k", "size": 9 * MiB})
    assert_error(r, 403, "QuotaExceeded")
    r = await client.post("/api/v1/uploads", json={"bucket": "small", "key": "k"})
    upload_id = r.json()["upload_id"]
    assert (await put_part(client, upload_id, 1, data(PART, 1))).status_code == 200
    assert_error(await put_part(client, upload_id, 2, data(PART, 2)), 403, "QuotaExceeded")
    session = (await client.get(f"/api/v1/uploads/{upload_id}")).json()
    assert [p["part_number"] for p in session["parts"]] == [1]


async def test_validation_at_creation(client: httpx.AsyncClient) -> None:
    await client.post("/api/v1/buckets", json={"name": "typed", "allowed_types": [".csv"]})
    cases = [
        ({"bucket": "nobucket", "key": "k"}, 404, "NoSuchBucket"),
        ({"bucket": "Bad_Name", "key": "k"}, 400, "InvalidBucketName"),
        ({"bucket": "checkpoints", "key": "a/../b"}, 400, "InvalidObjectName"),
        ({"bucket": "typed", "key": "model.pt"}, 415, "UnsupportedFileType"),
        ({"bucket": "checkpoints", "key": "k", "sha256": "zz"}, 400, "InvalidDigest"),
        ({"bucket": "checkpoints", "key": "k", "size": -1}, 400, "InvalidArgument"),
        ({"bucket": "checkpoints", "key": "k", "metadata": "x"}, 400, "InvalidArgument"),
        ({"bucket": "checkpoints", "key": "k", "content_type": "a\nb"}, 400, "InvalidArgument"),
    ]
    for body, status, code in cases:
        assert_error(await client.post("/api/v1/uploads", json=body), status, code)
    assert (await client.get("/api/v1/uploads")).json() == {"uploads": []}


async def test_abort_removes_the_session_and_its_parts(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    upload_id = await create(client)
    await send_parts(client, upload_id, {1: data(PART, 1), 2: data(10, 2)})
    assert stored_files(settings)  # the parts (or the engine's upload)
    r = await client.delete(f"/api/v1/uploads/{upload_id}")
    assert r.status_code == 204 and r.content == b""
    assert_error(await client.get(f"/api/v1/uploads/{upload_id}"), 404, "NoSuchUpload")
    assert_error(await client.delete(f"/api/v1/uploads/{upload_id}"), 404, "NoSuchUpload")
    assert_error(await put_part(client, upload_id, 3, b"x"), 404, "NoSuchUpload")
    assert stored_files(settings) == []


async def test_listing_shows_open_sessions_the_caller_may_write(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    mine = await create(client, key="a.bin")
    other = (await client.post("/api/v1/uploads", json={"bucket": "models", "key": "m.pt"})).json()[
        "upload_id"
    ]
    done = await create(client, key="done.bin")
    await send_parts(client, done, {1: b"x"})
    assert (await complete(client, done, {1: b"x"})).status_code == 200

    listed = (await client.get("/api/v1/uploads", params={"bucket": "checkpoints"})).json()
    assert [u["upload_id"] for u in listed["uploads"]] == [mine]
    assert "parts" not in listed["uploads"][0] and listed["uploads"][0]["key"] == "a.bin"
    everything = (await client.get("/api/v1/uploads")).json()["uploads"]
    assert {u["upload_id"] for u in everything} == {mine, other}

    r = await client.post(
        "/api/v1/tokens", json={"name": "w", "scopes": ["write"], "buckets": ["models"]}
    )
    token = r.json()["token"]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {token}"}
    ) as writer:
        visible = (await writer.get("/api/v1/uploads")).json()["uploads"]
        assert [u["upload_id"] for u in visible] == [other]
        r = await writer.get("/api/v1/uploads", params={"bucket": "checkpoints"})
        assert_error(r, 403, "AccessDenied")
        # Another bucket's session: refused whatever the operation.
        assert_error(await writer.get(f"/api/v1/uploads/{mine}"), 403, "AccessDenied")
        assert_error(await put_part(writer, mine, 1, b"x"), 403, "AccessDenied")
        assert_error(await writer.delete(f"/api/v1/uploads/{mine}"), 403, "AccessDenied")
        assert (await writer.get(f"/api/v1/uploads/{other}")).status_code == 200
    assert (await client.get(f"/api/v1/uploads/{mine}")).status_code == 200


async def test_unknown_and_malformed_ids(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    for upload_id in ("0" * 32, "not-an-id", "A" * 32):
        assert_error(await client.get(f"/api/v1/uploads/{upload_id}"), 404, "NoSuchUpload")
        assert_error(await put_part(client, upload_id, 1, b"x"), 404, "NoSuchUpload")
        assert_error(await complete(client, upload_id, {1: b"x"}), 404, "NoSuchUpload")
        assert_error(await client.delete(f"/api/v1/uploads/{upload_id}"), 404, "NoSuchUpload")
    upload_id = await create(client)
    for number in ("0", "10001", "x"):
        r = await client.put(f"/api/v1/uploads/{upload_id}/parts/{number}", content=b"x")
        assert_error(r, 400, "InvalidArgument")
    assert_error(await anon.get(f"/api/v1/uploads/{upload_id}"), 401, "Unauthenticated")


async def test_idle_sessions_expire_and_their_parts_go(settings: Settings) -> None:
    async with client_with(settings, upload_session_ttl_seconds=1) as client:
        upload_id = await create(client)
        await send_parts(client, upload_id, {1: data(PART, 1)})
        await anyio.sleep(1.2)
        await client.app.state.storage.run_maintenance()  # type: ignore[attr-defined]
        assert_error(await client.get(f"/api/v1/uploads/{upload_id}"), 404, "NoSuchUpload")
    # On S3 this includes the engine's multipart uploads: the session's is gone too.
    assert stored_files(settings) == []


async def test_expiry_spares_a_session_used_since_it_was_found_idle(
    settings: Settings,
) -> None:
    # The sweep lists idle sessions, then aborts them one by one: a part recorded in
    # between makes the session live again, and it must survive.
    async with client_with(settings) as client:
        upload_id = await create(client)
        uploads = client.app.state.storage.uploads  # type: ignore[attr-defined]
        scans = [[upload_id]]  # what a scan made before the parts below saw
        uploads._index.idle_sessions = lambda before, limit=100: scans.pop() if scans else []
        parts = {1: data(PART, 1), 2: data(10, 2)}
        await send_parts(client, upload_id, parts)
        assert await uploads.expire_idle() == 0
        r = await complete(client, upload_id, parts)
        assert r.status_code == 200, r.text


async def test_a_completion_outlasting_the_lease_keeps_its_claim(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A huge object takes long to assemble and hash. A client retrying its completion
    # meanwhile must get 409, not a second completion: the loser of two would remove
    # the blob (the session's own) that the winner just committed.
    monkeypatch.setattr("tfstorage.index.uploads.COMPLETION_LEASE", timedelta(seconds=0.3))
    monkeypatch.setattr("tfstorage.service.uploads.CLAIM_RENEWAL_SECONDS", 0.05)
    async with client_with(settings) as client:
        blobs = client.app.state.storage.ctx.blobs  # type: ignore[attr-defined]
        assemble = blobs.complete_multipart
        started, go_on = anyio.Event(), anyio.Event()

        async def slow_first(*args: Any, **kwargs: Any) -> Any:
            if not started.is_set():
                started.set()
                await go_on.wait()
            return await assemble(*args, **kwargs)

        blobs.complete_multipart = slow_first
        parts = {1: data(PART, 1), 2: data(10, 2)}
        upload_id = await create(client)
        await send_parts(client, upload_id, parts)
        answers: list[httpx.Response] = []

        async def first() -> None:
            answers.append(await complete(client, upload_id, parts))

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await started.wait()
            await anyio.sleep(0.5)  # the first claim would have run out by now
            second = await complete(client, upload_id, parts)
            assert_error(second, 409, "Conflict")
            go_on.set()
        assert answers[0].status_code == 200, answers[0].text
        got = await client.get("/api/v1/download/checkpoints/run/ckpt.bin")
        assert got.content == parts[1] + parts[2]


async def test_garbage_collection_spares_live_sessions(settings: Settings) -> None:
    # Run as if the grace had passed, every incomplete write is swept, except a live
    # session's. (Not ORPHAN_GRACE_SECONDS=0: the start-up run would then sweep the
    # engine's upload between its creation and its session's, as a grace prevents.)
    async with client_with(settings) as client:
        parts = {1: data(PART, 1), 2: data(10, 2)}
        upload_id = await create(client)
        await send_parts(client, upload_id, parts)
        storage = client.app.state.storage  # type: ignore[attr-defined]
        report = await storage.gc.run_once(
            now=time.time() + 2 * storage.settings.orphan_grace_seconds
        )
        assert report.incomplete_writes == 0
        r = await complete(client, upload_id, parts)
        assert r.status_code == 200, r.text
        got = await client.get("/api/v1/download/checkpoints/run/ckpt.bin")
        assert got.content == parts[1] + parts[2]


async def test_a_completed_upload_reaches_the_replica(settings: Settings, tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    async with client_with(
        settings, replica_storage_type="local", replica_data_dir=replica
    ) as client:
        parts = {1: data(PART, 1), 2: data(99, 2)}
        upload_id = await create(client)
        await send_parts(client, upload_id, parts)
        r = await complete(client, upload_id, parts)
        assert r.status_code == 200, r.text
    whole = parts[1] + parts[2]
    # Only the assembled blob is copied (never the parts), whole.
    copies = [p for p in replica.rglob("*") if p.is_file() and ".tmp" not in p.parts]
    assert [p.read_bytes() for p in copies] == [whole]


async def test_json_bodies_are_bounded_but_parts_stream(client: httpx.AsyncClient) -> None:
    upload_id = await create(client)
    huge = {"parts": [{"part_number": 1, "etag": "0" * 32}], "sha256": "x" * (2 * MiB)}
    r = await client.post(f"/api/v1/uploads/{upload_id}/complete", json=huge)
    assert_error(r, 413, "RequestTooLarge")  # read whole by FastAPI: capped at 1 MiB
    r = await put_part(client, upload_id, 1, data(2 * MiB, 1))  # a part is no JSON
    assert r.status_code == 200 and r.json()["size"] == 2 * MiB
