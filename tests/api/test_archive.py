"""Archives of a prefix: valid zip and tar, entries matching, names safe, bytes verified."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.test_access import bearer, new_token
from tfstorage.config import Settings
from tfstorage.domain.records import NewVersion
from tfstorage.service.archive import entry_name

pytestmark = pytest.mark.anyio


def zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None  # every CRC checks out
        names = archive.namelist()
        assert len(names) == len(set(names))
        return {name: archive.read(name) for name in names}


def tar_entries(data: bytes) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        for member in archive:
            assert member.isreg() and member.name not in found
            extracted = archive.extractfile(member)
            assert extracted is not None
            found[member.name] = extracted.read()
    return found


async def test_archive_of_a_thousand_files(client: httpx.AsyncClient) -> None:
    expected: dict[str, bytes] = {}
    for batch in range(10):
        files = []
        for i in range(batch * 100, batch * 100 + 100):
            data = f"file {i}\n".encode() * (1 + i % 37)
            files.append(("file", (f"f{i:04}.txt", data)))
            expected[f"set{batch}/f{i:04}.txt"] = data
        r = await client.post(
            "/api/v1/files/upload",
            files=files,
            data={"bucket": "datasets", "prefix": f"ds/set{batch}"},
        )
        assert r.status_code == 201, r.text
    await client.put("/api/v1/objects/datasets/dsx/outside.bin", content=b"not in it")

    r = await client.get("/api/v1/archive/datasets", params={"prefix": "ds/"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "datasets-ds.zip" in r.headers["content-disposition"]
    assert zip_entries(r.content) == expected

    r = await client.get("/api/v1/archive/datasets", params={"prefix": "ds/", "format": "tar"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-tar"
    assert tar_entries(r.content) == expected
    assert len(r.content) % tarfile.RECORDSIZE == 0


async def test_hostile_key_names_are_sanitised(
    client: httpx.AsyncClient, app: FastAPI, tmp_path: Path
) -> None:
    # The API refuses such keys, but other paths (an S3 endpoint, old data) may not: put
    # them straight into the index, sharing the bytes of an uploaded object.
    up = await client.put("/api/v1/objects/artifacts/h/seed.txt", content=b"seed")
    seed = up.json()
    index = app.state.storage.ctx.index
    hostile = [
        "h/../../etc/passwd",
        "h//abs/olute",
        "h/a\\..\\b.txt",
        "h/ctl\x01\x1b[31m.txt",
        "h/C:\\win.txt",
        "h/./y/../z.txt",
        "h/dup//n.txt",
        "h/dup/n.txt",
        "h/\u0085next.txt",
        "h/x/..",
    ]
    for key in hostile:
        index.commit_version(
            NewVersion(
                bucket="artifacts",
                key=key,
                blob_id="f" * 32,  # replaced by the stored blob of the same sha256
                size=4,
                md5=seed["etag"],
                sha256=seed["sha256"],
                content_type="text/plain",
            )
        )
    expected = {
        "__/__/etc/passwd",
        "abs/olute",
        "a_.._b.txt",
        "ctl__[31m.txt",
        "C__win.txt",
        "y/__/z.txt",
        "dup/n.txt",
        "dup/n~2.txt",
        "_next.txt",
        "x/__",
        "seed.txt",
    }
    for fmt, read in (("zip", zip_entries), ("tar", tar_entries)):
        r = await client.get("/api/v1/archive/artifacts", params={"prefix": "h/", "format": fmt})
        assert r.status_code == 200, r.text
        entries = read(r.content)
        assert set(entries) == expected
        assert set(entries.values()) == {b"seed"}
    # And extraction stays inside its folder (tarfile's "data" filter refuses anything else).
    with tarfile.open(fileobj=io.BytesIO(r.content)) as archive:
        archive.extractall(tmp_path / "out", filter="data")
    extracted = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*")}
    assert expected <= extracted


def test_entry_names() -> None:
    assert entry_name("runs/r1/ckpt/e1.pt", "runs/r1/") == "ckpt/e1.pt"
    assert entry_name("runs/r1/ckpt/e1.pt", "runs/r") == "r1/ckpt/e1.pt"  # partial prefix
    assert entry_name("a/b", "") == "a/b"
    assert entry_name("/", "") == "_"
    assert entry_name("x/\u00e9t\u00e9 \U0001f600.txt", "x/") == "\u00e9t\u00e9 \U0001f600.txt"


async def test_empty_prefix_gives_a_valid_empty_archive(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/archive/artifacts", params={"prefix": "nothing/"})
    assert r.status_code == 200 and zip_entries(r.content) == {}
    r = await client.get(
        "/api/v1/archive/artifacts", params={"prefix": "nothing/", "format": "tar"}
    )
    assert r.status_code == 200 and tar_entries(r.content) == {}
    r = await client.get("/api/v1/archive/nobucket")
    assert r.status_code == 404 and r.json()["code"] == "NoSuchBucket"
    r = await client.get("/api/v1/archive/artifacts", params={"format": "rar"})
    assert r.status_code == 400


async def test_a_corrupted_entry_cuts_the_stream(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    await client.put("/api/v1/objects/artifacts/c/a.bin", content=b"a" * 5000)
    bad = (await client.put("/api/v1/objects/artifacts/c/b.bin", content=b"b" * 5000)).json()
    await client.put("/api/v1/objects/artifacts/c/c.bin", content=b"c" * 5000)
    blob_id = app.state.storage.ctx.index.get_version(bad["file_id"]).blob_id

    async def rotten() -> object:
        yield b"B" * 5000  # same size, other bytes: only the checksum can tell

    await app.state.storage.ctx.blobs.put(blob_id, rotten())
    for fmt in ("zip", "tar"):
        try:
            r = await client.get(
                "/api/v1/archive/artifacts", params={"prefix": "c/", "format": fmt}
            )
        except httpx.HTTPError:
            continue  # cut off mid-body: what a client sees
        data = r.content
        assert b"B" * 5000 not in data  # the bad bytes never went out whole
        with pytest.raises((zipfile.BadZipFile, tarfile.TarError, EOFError, AssertionError)):
            (zip_entries if fmt == "zip" else tar_entries)(data)


async def test_archive_rights(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    await client.put("/api/v1/objects/artifacts/run1/a.bin", content=b"1")
    await client.put("/api/v1/objects/artifacts/run2/b.bin", content=b"2")
    confined = await new_token(client, scopes=["read"], buckets=["artifacts"], prefix="run1/")
    h = bearer(confined)
    r = await anon.get("/api/v1/archive/artifacts", params={"prefix": "run1/"}, headers=h)
    assert r.status_code == 200 and set(zip_entries(r.content)) == {"a.bin"}
    for prefix in ("", "run2/", "run"):
        r = await anon.get("/api/v1/archive/artifacts", params={"prefix": prefix}, headers=h)
        assert r.status_code == 403, (prefix, r.text)
    r = await anon.get("/api/v1/archive/artifacts")
    assert r.status_code == 401
