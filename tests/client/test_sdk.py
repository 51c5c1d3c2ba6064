"""The AsyncClient against the real app (in-process): objects, listings, buckets,
tokens, presigned links, errors, and directory transfers with skipping."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fastapi import FastAPI

from tests.client.counting import CountingTransport
from tests.server.conftest import ADMIN_TOKEN
from tfstorage.client import (
    AsyncClient,
    BucketNotEmpty,
    NoSuchBucket,
    NoSuchKey,
    NotFound,
    Unauthenticated,
)

pytestmark = pytest.mark.anyio


async def test_small_file_round_trip_with_metadata(sdk: AsyncClient, tmp_path: Path) -> None:
    src = tmp_path / "model.pt"
    data = os.urandom(300_000)
    src.write_bytes(data)
    seen: list[int] = []
    info = await sdk.upload_file(
        src,
        "artifacts",
        "runs/1/model.pt",
        metadata={"epoch": 3},
        tags={"team": "vision"},
        progress=seen.append,
    )
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert sum(seen) == len(data)

    stat = await sdk.stat("artifacts", "runs/1/model.pt")
    assert stat.metadata == {"epoch": 3} and stat.tags == {"team": "vision"}
    assert stat.file_id == info.file_id and stat.etag == hashlib.md5(data).hexdigest()

    dest = tmp_path / "out" / "copy.pt"
    got: list[int] = []
    await sdk.download_file("artifacts", "runs/1/model.pt", dest, progress=got.append)
    assert dest.read_bytes() == data and sum(got) == len(data)
    assert not list(dest.parent.glob(".*tfs-partial*"))
    assert await sdk.download_bytes("artifacts", "runs/1/model.pt") == data


async def test_listing_versions_delete(sdk: AsyncClient) -> None:
    for i in range(3):
        await sdk.upload_bytes(f"v{i}".encode(), "artifacts", "a/b/c.txt")
    await sdk.upload_bytes(b"x", "artifacts", "a/d.txt")
    listing = await sdk.list("artifacts", "a/", delimiter="/")
    assert [o.key for o in listing.objects] == ["a/d.txt"]
    assert listing.common_prefixes == ["a/b/"]
    assert [o.key async for o in sdk.iter_objects("artifacts", "a/")] == ["a/b/c.txt", "a/d.txt"]
    versions = await sdk.versions("artifacts", "a/b/c.txt")
    assert len(versions) == 3 and versions[0].is_latest
    await sdk.delete("artifacts", "a/b/c.txt")
    with pytest.raises(NoSuchKey) as caught:
        await sdk.stat("artifacts", "a/b/c.txt")
    assert caught.value.status == 404


async def test_errors_carry_the_server_code(sdk: AsyncClient, app: object, tmp_path: Path) -> None:
    with pytest.raises(NoSuchBucket):
        await sdk.upload_bytes(b"x", "no-such-bucket", "k")
    with pytest.raises(NotFound):
        await sdk.download_file("artifacts", "missing", tmp_path / "never")
    assert not (tmp_path / "never").exists()
    import httpx

    async with AsyncClient(
        "http://testserver",
        "tfs_wrong",
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
    ) as anonymous:
        with pytest.raises(Unauthenticated) as caught:
            await anonymous.list_buckets()
    assert caught.value.request_id


async def test_buckets_tokens_presign_stats(sdk: AsyncClient) -> None:
    await sdk.create_bucket("scratch", description="tmp")
    assert "scratch" in {b["name"] for b in await sdk.list_buckets()}
    await sdk.upload_bytes(b"x", "scratch", "k")
    with pytest.raises(BucketNotEmpty):
        await sdk.delete_bucket("scratch")
    await sdk.delete_bucket("scratch", force=True)

    made = await sdk.create_token("reader", ["read"], buckets=["scratch"])
    assert made["token"] and made["scopes"] == ["read"]
    assert "reader" in {t["name"] for t in await sdk.list_tokens()}
    assert (await sdk.revoke_token(made["id"]))["revoked"] is True

    signed = await sdk.presign("artifacts", "k", method="PUT", expires_in=60)
    assert signed["url"].startswith("http://testserver/") and signed["method"] == "PUT"
    assert "total_objects" in await sdk.stats()


def _tree(root: Path, files: int) -> dict[str, bytes]:
    made = {}
    for i in range(files):
        rel = f"d{i % 3}/f{i:03}.bin" if i % 4 else f"top{i}.bin"
        data = os.urandom(1000 + i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        made[rel] = data
    return made


async def test_directory_up_and_back_skips_what_matches(sdk: AsyncClient, tmp_path: Path) -> None:
    src = tmp_path / "src"
    made = _tree(src, 40)
    (src / "big.bin").write_bytes(os.urandom(7 * 1024 * 1024))  # multipart (threshold 6 MiB)
    made["big.bin"] = (src / "big.bin").read_bytes()

    planned: list[tuple[int, int]] = []
    report = await sdk.upload_dir(
        src, "artifacts", "tree", skip_existing=True, planned=lambda f, b: planned.append((f, b))
    )
    assert report.ok, report.failed
    assert sorted(report.transferred) == sorted(f"tree/{k}" for k in made)
    assert planned == [(len(made), sum(len(v) for v in made.values()))]

    (src / "d1" / "f001.bin").write_bytes(b"changed")
    again = await sdk.upload_dir(src, "artifacts", "tree/")
    assert again.transferred == ["tree/d1/f001.bin"] and len(again.skipped) == len(made) - 1
    made["d1/f001.bin"] = b"changed"

    dst = tmp_path / "dst"
    down = await sdk.download_prefix("artifacts", "tree/", dst)
    assert down.ok and len(down.transferred) == len(made)
    assert {
        p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()
    } == made
    assert (await sdk.download_prefix("artifacts", "tree/", dst)).transferred == []


async def test_many_small_files_come_down_as_one_archive(app: FastAPI, tmp_path: Path) -> None:
    """Over 100 small files: one streamed tar of the prefix, each entry checked against
    the listing's SHA-256; a key whose archive name the server had to clean (':') is
    fetched on its own."""
    src = tmp_path / "src"
    made = _tree(src, 150)
    (src / "d0" / "odd:name.bin").write_bytes(b"colon")
    made["d0/odd:name.bin"] = b"colon"
    transport = CountingTransport(app)
    async with AsyncClient("http://testserver", ADMIN_TOKEN, transport=transport) as c:
        assert (await c.upload_dir(src, "artifacts", "many/")).ok
        transport.seen.clear()
        done: list[str] = []
        report = await c.download_prefix(
            "artifacts", "many/", tmp_path / "dst", on_file=done.append
        )
    assert report.ok and len(report.transferred) == len(made) == len(done)
    assert {
        p.relative_to(tmp_path / "dst").as_posix(): p.read_bytes()
        for p in (tmp_path / "dst").rglob("*")
        if p.is_file()
    } == made
    paths = [p for m, p, _ in transport.seen if m == "GET"]
    assert paths.count("/api/v1/archive/artifacts") == 1
    singles = [p for p in paths if p.startswith("/api/v1/files/download/")]
    assert len(singles) == 1  # the cleaned name only
