"""Transfers at their edges: keys with characters that mean something in a URL ('#',
'?', '%', ' ', non-ASCII) reach the object of that exact key; keys map onto local paths
one to one; what is saved are the object's bytes, whatever an intermediary does (gzip,
a damaged batch file, a redirect, the object replaced between a cut and its resume)."""

from __future__ import annotations

import gzip
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.server.conftest import ADMIN_TOKEN
from tfstorage.client import AsyncClient, IncompleteDownload, NoSuchKey, TFStorageError
from tfstorage.client.directories import local_files

pytestmark = pytest.mark.anyio

ODD_KEYS = ["w#1.bin", "q?x=1", "p%41", "sp ace", "dé.bin"]


async def test_keys_with_url_characters_reach_their_own_object(
    sdk: AsyncClient, tmp_path: Path
) -> None:
    await sdk.upload_bytes(b"plain w", "artifacts", "odd/w")
    for name in ODD_KEYS:
        key = f"odd/{name}"
        src = tmp_path / "src.bin"
        src.write_bytes(name.encode() * 100)
        info = await sdk.upload_file(src, "artifacts", key)
        assert info.key == key
        assert (await sdk.stat("artifacts", key)).sha256 == info.sha256
        assert [v.file_id for v in await sdk.versions("artifacts", key)] == [info.file_id]
        dest = tmp_path / "dest.bin"
        await sdk.download_file("artifacts", key, dest)
        assert dest.read_bytes() == src.read_bytes()
        assert await sdk.download_bytes("artifacts", key) == src.read_bytes()
        await sdk.delete("artifacts", key)
        with pytest.raises(NoSuchKey):
            await sdk.stat("artifacts", key)
    listing = await sdk.list("artifacts", "odd/")
    assert [(o.key, o.size) for o in listing.objects] == [("odd/w", 7)]


async def test_a_directory_with_url_characters_in_names_keeps_every_file(
    sdk: AsyncClient, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    made = {"w": b"plain", **{name: os.urandom(100) for name in ODD_KEYS}}
    for name, data in made.items():
        (src / name).write_bytes(data)
    report = await sdk.upload_dir(src, "artifacts", "tree/")
    assert report.ok, report.failed
    keys = [o.key for o in (await sdk.list("artifacts", "tree/")).objects]
    assert sorted(keys) == sorted(f"tree/{n}" for n in made)
    dst = tmp_path / "dst"
    assert (await sdk.download_prefix("artifacts", "tree/", dst)).ok
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == made


async def test_keys_that_would_share_a_local_path_are_not_mixed_up(
    sdk: AsyncClient, tmp_path: Path
) -> None:
    """A folder marker ("sub/", as S3 consoles make) becomes a directory, not a file
    that blocks everything under it; keys that would land on one local path ("x//y" and
    "x/y", or a key named like another's partial file) are refused, not written over
    each other — the result must not depend on which transfer finished last."""
    stored = {
        "m/": b"",
        "m/sub/": b"",
        "m/sub/a": b"A",
        "m/x//y": b"double",
        "m/x/y": b"single",
        "m/z/.y.tfs-partial": b"looks like a partial file",
    }
    for key, data in stored.items():
        await sdk.upload_bytes(data, "artifacts", key)
    dst = tmp_path / "dst"
    for _ in range(2):
        report = await sdk.download_prefix("artifacts", "m/", dst)
        assert set(report.failed) == {"m/x//y", "m/z/.y.tfs-partial"}
        files = {
            p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()
        }
        assert files == {"sub/a": b"A", "x/y": b"single"}


class _GzipProxy(httpx.AsyncBaseTransport):
    """An intermediary that compresses every 200 answer the client says it accepts
    gzip for (nginx with `gzip_types *`, say)."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        accepted = request.headers.get("accept-encoding", "")
        if request.method != "GET" or response.status_code != 200 or "gzip" not in accepted:
            return response
        body = gzip.compress(await response.aread())
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        headers |= {"content-encoding": "gzip", "content-length": str(len(body))}
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))


async def test_a_download_through_a_compressing_proxy_is_saved(
    app: FastAPI, tmp_path: Path
) -> None:
    """The checksum is over the object's bytes: the client asks for them unencoded
    (or decodes them), rather than failing every download behind such a proxy."""
    data = b"highly compressible " * 50_000
    async with AsyncClient("http://testserver", ADMIN_TOKEN, transport=_GzipProxy(app)) as c:
        await c.upload_bytes(data, "artifacts", "gz/w.bin")
        dest = tmp_path / "w.bin"
        await c.download_file("artifacts", "gz/w.bin", dest)
        assert dest.read_bytes() == data
        assert (await c.download_prefix("artifacts", "gz/", tmp_path / "d")).ok
        assert (tmp_path / "d" / "w.bin").read_bytes() == data


class _CorruptingTransport(httpx.AsyncBaseTransport):
    """Flips bytes of one file's content inside batch upload forms, as a bad link or
    NIC would: the request still parses, one file's bytes are wrong."""

    def __init__(self, app: FastAPI, marker: bytes) -> None:
        self.inner = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.marker = marker

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if request.url.path == "/api/v1/files/upload" and self.marker in body:
            damaged = body.replace(self.marker, bytes(len(self.marker)))
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=damaged
            )
        return await self.inner.handle_async_request(request)


async def test_a_batch_file_damaged_on_the_way_is_refused_and_the_old_version_kept(
    app: FastAPI, tmp_path: Path
) -> None:
    """Each file of a batch carries its SHA-256 for the server to check before it
    stores it: a damaged one is refused (reported failed) instead of replacing the
    previous version with wrong bytes."""
    marker = b"DAMAGE-ME-" * 10
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"new " + marker)
    (src / "b.bin").write_bytes(b"fine")
    transport = _CorruptingTransport(app, marker)
    async with AsyncClient("http://testserver", ADMIN_TOKEN, transport=transport) as c:
        old = await c.upload_bytes(b"old version", "artifacts", "t/a.bin")
        report = await c.upload_dir(src, "artifacts", "t/", skip_existing=False)
        assert set(report.failed) == {"t/a.bin"} and report.transferred == ["t/b.bin"]
        assert (await c.stat("artifacts", "t/a.bin")).sha256 == old.sha256
        assert await c.download_bytes("artifacts", "t/b.bin") == b"fine"


class _CutOnce(httpx.AsyncBaseTransport):
    """Cuts the first file download after `after` bytes; just before the cut,
    `meanwhile` runs (the object is replaced on the server)."""

    def __init__(self, app: FastAPI, after: int) -> None:
        self.inner = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.after = after
        self.meanwhile: list[bytes] = []
        self.ranges: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not request.url.path.startswith("/api/v1/files/download/"):
            return response
        self.ranges.append(request.headers.get("range"))
        if len(self.ranges) > 1:
            return response
        inner, transport = response.stream, self

        class Cut(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                sent = 0
                async for chunk in inner:  # type: ignore[union-attr]
                    chunk = chunk[: max(0, transport.after - sent)]
                    sent += len(chunk)
                    if chunk:
                        yield chunk
                    if sent >= transport.after:
                        for data in transport.meanwhile:
                            await _put(transport.inner, data)
                        raise httpx.ReadError("connection reset")

        return httpx.Response(response.status_code, headers=response.headers, stream=Cut())


async def _put(inner: httpx.AsyncBaseTransport, data: bytes) -> None:
    async with httpx.AsyncClient(transport=inner, base_url="http://testserver") as c:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = await c.put("/api/v1/objects/artifacts/ck/w.bin", content=data, headers=headers)
        assert r.status_code == 200


async def test_a_download_resumed_after_the_object_changed_never_mixes_versions(
    app: FastAPI, tmp_path: Path
) -> None:
    """Within one call the retry asks for the rest of the version it started (its
    file_id); in a later run, a partial file of the old version is dropped."""
    v1, v2, v3 = os.urandom(3 * 1024 * 1024), os.urandom(3 * 1024 * 1024), os.urandom(1000)
    dest = tmp_path / "w.bin"
    cut = _CutOnce(app, after=1024 * 1024)
    async with AsyncClient("http://testserver", ADMIN_TOKEN, transport=cut, retries=1) as c:
        await c.upload_bytes(v1, "artifacts", "ck/w.bin")
        cut.meanwhile = [v2]
        await c.download_file("artifacts", "ck/w.bin", dest)
    assert dest.read_bytes() == v1 and cut.ranges == [None, f"bytes={1024 * 1024}-"]

    cut = _CutOnce(app, after=1024 * 1024)
    async with AsyncClient("http://testserver", ADMIN_TOKEN, transport=cut, retries=0) as c:
        with pytest.raises(IncompleteDownload):
            await c.download_file("artifacts", "ck/w.bin", tmp_path / "again.bin")
        await c.upload_bytes(v3, "artifacts", "ck/w.bin")
        await c.download_file("artifacts", "ck/w.bin", tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == v3 and cut.ranges == [None, None]


class _Redirecting(httpx.AsyncBaseTransport):
    """A front end that answers every request with a redirect (http -> https, say)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        location = str(request.url.copy_with(scheme="https"))
        return httpx.Response(301, headers={"location": location}, stream=httpx.ByteStream(b""))


async def test_a_redirect_is_an_error_not_a_success(tmp_path: Path) -> None:
    """The SDK does not follow redirects (the token must not travel to another
    address), so a 3xx answer did nothing: it must be raised, not taken as done."""
    async with AsyncClient("http://testserver", ADMIN_TOKEN, transport=_Redirecting()) as c:
        with pytest.raises(TFStorageError, match="https://testserver/") as caught:
            await c.delete("artifacts", "some/key")
        assert caught.value.status == 301
        with pytest.raises(TFStorageError, match="redirect"):
            await c.create_bucket("scratch")
        with pytest.raises(TFStorageError, match="redirect"):
            await c.download_file("artifacts", "some/key", tmp_path / "x")
        with pytest.raises(TFStorageError, match="redirect"):
            await c.list("artifacts")


def test_an_interrupted_downloads_leftovers_are_not_uploaded(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "model.pt").write_bytes(b"m")
    (tmp_path / "sub" / ".big.bin.tfs-partial").write_bytes(b"half")
    (tmp_path / "sub" / ".big.bin.tfs-partial.json").write_text("{}")
    assert local_files(tmp_path) == [(tmp_path / "sub" / "model.pt", "sub/model.pt")]
