"""Issue 10: block checksums. A ranged read over a flipped byte is cut before the bad
block leaves, on local disk and on S3 (SeaweedFS); an intact range costs only the
partial blocks at its two ends of extra reading; verify and the scrub name the damaged
block; blobs recorded before block checksums get them from the scrub, only if their
bytes still match their SHA-256."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tests.api.blob_damage import StoredBlobs
from tests.api.conftest import ADMIN, assert_error, make_settings
from tests.api.test_replica import read_until_cut
from tests.s3.fixtures import s3_settings_overrides
from tfstorage.api.app import create_app
from tfstorage.config import Settings
from tfstorage.domain.blocks import block_checksums_of
from tfstorage.index.tables import blobs
from tfstorage.service.storage import Storage

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
B = 64 * 1024  # small blocks keep the objects small; the code is the same at 1 MiB
DATA = os.urandom(10 * B + 1234)  # ten whole blocks and a short last one
FLIP = 3 * B + 2000  # in block 3
URL = "/api/v1/download/models/w.bin"


def _settings(request: pytest.FixtureRequest, tmp_path: Path, **extra: Any) -> Settings:
    extra = {"block_size": B, "max_file_size": 16 * 1024 * 1024, **extra}
    if request.param == "local":
        return make_settings(tmp_path, **extra)
    seaweed = request.getfixturevalue("seaweedfs")
    prefix = request.getfixturevalue("s3_prefix")
    overrides = s3_settings_overrides(seaweed, seaweed.bucket, prefix=prefix)
    return make_settings(tmp_path, **overrides, **extra)


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return _settings(request, tmp_path)


def storage_of(app: FastAPI) -> Storage:
    storage: Storage = app.state.storage
    return storage


async def upload(c: httpx.AsyncClient, app: FastAPI, key: str, data: bytes) -> tuple[str, str]:
    r = await c.put(f"/api/v1/objects/models/{key}", content=data)
    assert r.status_code == 200, r.text
    file_id: str = r.json()["file_id"]
    return file_id, storage_of(app).ctx.index.get_version(file_id).blob_id


async def get_range(c: httpx.AsyncClient, url: str, start: int, end: int) -> httpx.Response:
    return await c.get(url, headers={"Range": f"bytes={start}-{end - 1}"})


class CountingReads:
    """The app's blob store, counting every byte read from it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def open(self, blob_id: str, start: int = 0, end: int | None = None) -> Any:
        return self._counted(await self._store.open(blob_id, start, end))

    async def _counted(self, stream: Any) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in stream:
                self.read += len(chunk)
                yield chunk
        finally:
            await stream.aclose()


# Ranges over a flipped byte ------------------------------------------------------------

RANGES = {
    "inside-one-block": (3 * B + 100, 3 * B + 5000),
    "spanning-blocks": (B + 7, 6 * B + 9),
}


@pytest.mark.parametrize("case", sorted(RANGES))
async def test_a_range_over_a_flipped_byte_is_cut_before_the_bad_block(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, case: str
) -> None:
    file_id, blob_id = await upload(client, app, "w.bin", DATA)
    StoredBlobs(settings).flip(blob_id, FLIP)
    start, end = RANGES[case]
    r = await get_range(client, URL, start, end)
    assert r.status_code == 206 and r.headers["content-length"] == str(end - start)
    # Every byte that left is right, and none of block 3 did: the blocks before it
    # (spanning case) were verified and sent, then the response was cut.
    assert r.content == DATA[start : max(start, 3 * B)]
    assert len(r.content) < end - start

    # The read marked the blob like a failed whole read: refused up front from now on.
    await storage_of(app).integrity.settle()
    assert storage_of(app).ctx.integrity.damage_of(blob_id) == "corrupt"
    refused = await get_range(client, f"/api/v1/files/download/{file_id}", start, end)
    assert_error(refused, 500, "ObjectCorrupted")


@pytest.mark.parametrize("block_size", [B, 8 * MiB])
async def test_a_whole_download_is_checked_by_blocks_unless_they_are_too_large(
    tmp_path: Path, block_size: int
) -> None:
    """From 2 MiB, a whole GET is checked block by block and stops before the bad block;
    with blocks over 4 MiB (held whole before they are sent) it streams under its SHA-256
    instead, which holds back only its last piece."""
    size, flip = 3 * MiB, 2 * MiB + 100
    data = os.urandom(size)
    settings = make_settings(tmp_path, block_size=block_size, max_file_size=16 * MiB)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            _, blob_id = await upload(c, app, "w.bin", data)
            StoredBlobs(settings).flip(blob_id, flip)
            received = await read_until_cut(c, URL)
    assert len(received) < size and data.startswith(received)
    if block_size == B:
        assert received == data[: flip // B * B]  # every block before the bad one
    else:
        assert 0 < len(received) <= 2 * MiB  # streamed, not held as one 8 MiB block


async def test_intact_ranges_read_only_their_end_blocks_and_are_served_whole(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await upload(client, app, "w.bin", DATA)
    ctx = storage_of(app).ctx
    counting = CountingReads(ctx.blobs)
    ctx.blobs = counting
    size = len(DATA)
    cases = [
        (0, 1),  # one byte
        (2 * B, 4 * B),  # block-aligned: no extra byte
        (B + 7, 6 * B + 9),  # partial blocks at both ends
        (3 * B + 100, 3 * B + 5000),  # inside one block
        (10 * B + 5, size),  # in the short last block
        (size - 100, size),  # a suffix
    ]
    for start, end in cases:
        counting.read = 0
        r = await get_range(client, URL, start, end)
        assert r.status_code == 206 and r.content == DATA[start:end]
        # The bound: the bytes of the first block before `start` and of the last block
        # after `end` (the blob's end caps it), never more.
        first, last = start - start % B, min(-(-end // B) * B, size)
        assert counting.read == last - first
        assert counting.read - (end - start) == start % B + (last - end) < 2 * B
    counting.read = 0
    assert (await client.get(URL)).content == DATA  # a whole read: exactly the object
    assert counting.read == size


async def test_the_sdk_resumed_download_fails_loudly_over_a_flipped_byte(
    app: FastAPI, settings: Settings, tmp_path: Path
) -> None:
    """A download cut before the flipped byte is resumed with Range; the server cuts the
    resumed part before the bad block, so the SDK reports an incomplete download (not a
    checksum mismatch after receiving everything) and saves nothing."""
    from tests.api.conftest import ADMIN_TOKEN
    from tfstorage.client import AsyncClient, ChecksumMismatch, IncompleteDownload
    from tfstorage.client.downloads import partial_path

    mib = 1024 * 1024
    data = os.urandom(2 * mib + 1234)
    flip = 3 * mib // 2 + 2000  # in block 24
    transport = CuttingTransport(httpx.ASGITransport(app=app, raise_app_exceptions=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
        _, blob_id = await upload(c, app, "w.bin", data)
    dest = tmp_path / "out" / "w.bin"
    transport.cut_after = mib + 99  # the first attempt ends early, before the flip
    async with AsyncClient(
        "http://t", ADMIN_TOKEN, transport=transport, retries=0, state_dir=tmp_path / "s"
    ) as sdk:
        with pytest.raises(IncompleteDownload):
            await sdk.download_file("models", "w.bin", dest)
        kept = partial_path(dest).stat().st_size  # the SDK keeps whole 1 MiB chunks
        assert kept == mib and partial_path(dest).read_bytes() == data[:kept]

        StoredBlobs(settings).flip(blob_id, flip)
        transport.cut_after = None
        with pytest.raises(IncompleteDownload) as failed:
            await sdk.download_file("models", "w.bin", dest)
    assert not isinstance(failed.value, ChecksumMismatch)
    assert transport.ranges[-1] == f"bytes={kept}-"
    # Kept: the verified bytes before the damaged block, nothing of it.
    assert partial_path(dest).read_bytes() == data[: flip // B * B]
    assert not dest.exists()
    await storage_of(app).integrity.settle()
    assert storage_of(app).ctx.integrity.damage_of(blob_id) == "corrupt"


class CuttingTransport(httpx.AsyncBaseTransport):
    """The app behind a connection that can end a response body after `cut_after`
    bytes (as a dropped connection does), and notes the Range of each request."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.cut_after: int | None = None
        self.ranges: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "range" in request.headers:
            self.ranges.append(request.headers["range"])
        response = await self._inner.handle_async_request(request)
        if self.cut_after is None or request.method != "GET":
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Cut(response, self.cut_after),
            request=request,
        )


class _Cut(httpx.AsyncByteStream):
    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._response = response
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._response.aiter_raw():
            chunk = chunk[: self._limit - sent]
            sent += len(chunk)
            yield chunk
            if sent >= self._limit:
                raise httpx.RemoteProtocolError("peer closed connection (test cut)")

    async def aclose(self) -> None:
        await self._response.aclose()


# Replica fallback ----------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def replicated_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    return _settings(
        request, tmp_path, replica_storage_type="local", replica_data_dir=tmp_path / "replica"
    )


async def test_a_bad_block_is_read_from_the_replica_and_the_range_completes(
    replicated_settings: Settings,
) -> None:
    app = create_app(replicated_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            _, blob_id = await upload(c, app, "w.bin", DATA)
            stored = StoredBlobs(replicated_settings)
            stored.flip(blob_id, FLIP)
            start, end = RANGES["spanning-blocks"]
            r = await get_range(c, URL, start, end)
            assert r.status_code == 206 and r.content == DATA[start:end]
            # The read marked the primary; its background check repaired it.
            await storage_of(app).integrity.settle()
            assert stored.read(blob_id) == DATA
            assert storage_of(app).ctx.integrity.damage_of(blob_id) is None


# Verify and scrub name the damaged block ---------------------------------------------


async def test_verify_and_the_scrub_name_the_damaged_block(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    stored = StoredBlobs(settings)
    file_id, blob_id = await upload(client, app, "w.bin", DATA)
    short_id, short_blob = await upload(client, app, "short.bin", DATA[::-1])
    await upload(client, app, "good.bin", b"intact" * 1000)
    stored.flip(blob_id, FLIP)
    stored.truncate(short_blob, 9 * B + 10)

    report = (await client.post(f"/api/v1/files/{file_id}/verify")).json()
    assert report["status"] == "corrupt" and report["block_size"] == B
    assert report["damaged_blocks"] == [{"block": 3, "start": 3 * B, "end": 4 * B}]
    assert report["damaged_block_count"] == 1 and report["blocks_recorded"] is False
    short = (await client.post(f"/api/v1/files/{short_id}/verify")).json()
    assert short["status"] == "truncated"
    assert short["damaged_blocks"] == [
        {"block": 9, "start": 9 * B, "end": 10 * B},
        {"block": 10, "start": 10 * B, "end": len(DATA)},
    ]

    scrub = await client.post("/api/v1/scrub/run", params={"wait": "true"})
    assert scrub.status_code == 200, scrub.text
    found = scrub.json()
    assert (found["corrupt"], found["truncated"], found["ok"]) == (1, 1, 1)
    assert found["damaged_blocks"] == {
        blob_id: {"count": 1, "blocks": [{"block": 3, "start": 3 * B, "end": 4 * B}]},
        short_blob: {"count": 2, "blocks": short["damaged_blocks"]},
    }
    last = (await client.get("/api/v1/scrub")).json()["last_report"]
    assert last["damaged_blocks"] == found["damaged_blocks"]


# Blobs recorded before block checksums ------------------------------------------------


async def test_the_scrub_records_block_checksums_of_old_blobs_only_from_intact_bytes(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    stored = StoredBlobs(settings)
    ctx = storage_of(app).ctx
    _, old_blob = await upload(client, app, "w.bin", DATA)
    rotten_data = os.urandom(5 * B)
    _, rotten_blob = await upload(client, app, "rotten.bin", rotten_data)
    verified_data = os.urandom(2 * B + 1)
    verified_id, verified_blob = await upload(client, app, "verified.bin", verified_data)
    with ctx.index.engine.begin() as conn:  # as rows written before revision 0008
        conn.execute(update(blobs).values(block_size=None, block_crc32c=None))
    assert ctx.integrity.block_checksums(old_blob) is None
    stored.flip(rotten_blob, 2 * B + 1)

    # Without block checksums a range is served as before: unverified.
    r = await get_range(client, "/api/v1/download/models/rotten.bin", 2 * B, 3 * B)
    assert r.status_code == 206 and r.content != rotten_data[2 * B : 3 * B]
    r = await get_range(client, URL, FLIP - 10, FLIP + 10)
    assert r.status_code == 206 and r.content == DATA[FLIP - 10 : FLIP + 10]

    # A verify fills them in too.
    answer = (await client.post(f"/api/v1/files/{verified_id}/verify")).json()
    assert answer["status"] == "ok" and answer["blocks_recorded"] is True
    assert answer["block_size"] == B  # the size of the checksums it recorded
    assert ctx.integrity.block_checksums(verified_blob) == block_checksums_of(verified_data, B)

    report = (await client.post("/api/v1/scrub/run", params={"wait": "true"})).json()
    assert report["blocks_recorded"] == 1 and report["corrupt"] == 1
    assert ctx.integrity.block_checksums(old_blob) == block_checksums_of(DATA, B)
    # Bytes that do not match the SHA-256 never give a blob its block checksums.
    assert ctx.integrity.block_checksums(rotten_blob) is None
    assert ctx.integrity.damage_of(rotten_blob) == "corrupt"

    # The recorded checksums now guard ranges of the old blob too.
    stored.flip(old_blob, FLIP)
    r = await get_range(client, URL, FLIP - 10, FLIP + 10)
    assert r.status_code == 206 and r.content == b""
    again = (await client.post("/api/v1/scrub/run", params={"wait": "true"})).json()
    assert again["blocks_recorded"] == 0  # nothing left to fill in; nothing overwritten
    assert ctx.integrity.block_checksums(old_blob) == block_checksums_of(DATA, B)


# Every write path records them ---------------------------------------------------------


async def test_multipart_uploads_and_dedup_record_the_whole_objects_block_checksums(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    ctx = storage_of(app).ctx
    part1, part2 = os.urandom(5 * 1024 * 1024 + 3), os.urandom(B + 17)  # blocks span parts
    whole = part1 + part2
    for declared in (None, len(part1)):  # parts as files of their own; parts placed
        body: dict[str, Any] = {"bucket": "models", "key": f"mp-{declared}.bin"}
        if declared:
            body["part_size"] = declared
        r = await client.post("/api/v1/uploads", json=body)
        assert r.status_code == 201, r.text
        upload_id = r.json()["upload_id"]
        etags = []
        for number, part in ((1, part1), (2, part2)):
            r = await client.put(f"/api/v1/uploads/{upload_id}/parts/{number}", content=part)
            assert r.status_code == 200, r.text
            etags.append({"part_number": number, "etag": r.json()["etag"]})
        r = await client.post(f"/api/v1/uploads/{upload_id}/complete", json={"parts": etags})
        assert r.status_code == 200, r.text
        version = ctx.index.get_version(r.json()["file_id"])
        assert ctx.integrity.block_checksums(version.blob_id) == block_checksums_of(whole, B)

    # A batch-free single PUT of the same bytes reuses the blob and its checksums.
    r = await client.put("/api/v1/objects/models/again.bin", content=whole)
    assert r.json()["deduplicated"] is True
    start, end = 5 * 1024 * 1024 - 5, 5 * 1024 * 1024 + 40
    got = await get_range(client, "/api/v1/download/models/again.bin", start, end)
    assert got.status_code == 206 and got.content == whole[start:end]
