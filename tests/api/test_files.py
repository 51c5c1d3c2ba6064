"""Files by id: multi-file upload, metadata, update, delete, search."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.api.conftest import assert_error

pytestmark = pytest.mark.anyio


async def test_many_files_in_one_request(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/files/upload",
        files=[
            ("file", ("a.csv", b"1,2")),
            ("file", ("b.csv", b"3,4")),
            ("file", ("c.json", b"{}")),
        ],
        data={
            "bucket": "datasets",
            "key": "mnist/",
            "metadata": '{"source": "test"}',
            "tags": "split=train",
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["count"] == 3
    keys = [f["key"] for f in body["files"]]
    assert keys == ["mnist/a.csv", "mnist/b.csv", "mnist/c.json"]
    assert all(f["metadata"] == {"source": "test"} for f in body["files"])
    assert all(f["tags"] == {"split": "train"} for f in body["files"])
    assert body["files"][2]["content_type"] == "application/json"


async def test_many_files_all_or_nothing(client: httpx.AsyncClient) -> None:
    # (Without atomic=true each file stands alone: tests/api/test_batch.py.)
    r = await client.post(
        "/api/v1/files/upload",
        files=[("file", ("ok.csv", b"1")), ("file", ("bad.exe", b"2"))],
        data={"bucket": "datasets", "prefix": "batch", "atomic": "true"},
    )
    assert_error(r, 415, "UnsupportedFileType")
    listing = (await client.get("/api/v1/list/datasets", params={"prefix": "batch"})).json()
    assert listing["objects"] == []


async def test_get_update_download_delete_by_id(client: httpx.AsyncClient) -> None:
    up = await client.post(
        "/api/v1/files/upload",
        files={"file": ("notes.txt", b"hello")},
        data={"bucket": "artifacts", "key": "docs/notes.txt", "metadata": '{"a": 1}'},
    )
    file_id = up.json()["file_id"]
    info = (await client.get(f"/api/v1/files/{file_id}")).json()
    assert info["key"] == "docs/notes.txt" and info["filename"] == "notes.txt"
    assert info["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert info["metadata"] == {"a": 1}
    assert info["size_human"] == "5 B"

    r = await client.put(
        f"/api/v1/files/{file_id}",
        json={"metadata": {"b": [1, 2]}, "tags": {"stage": "dev"}, "content_type": "text/markdown"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == {"b": [1, 2]} and r.json()["tags"] == {"stage": "dev"}
    dl = await client.get(f"/api/v1/files/download/{file_id}")
    assert dl.content == b"hello" and dl.headers["content-type"].startswith("text/markdown")
    ranged = await client.get(f"/api/v1/files/download/{file_id}", headers={"Range": "bytes=1-2"})
    assert ranged.status_code == 206 and ranged.content == b"el"

    r = await client.delete(f"/api/v1/files/{file_id}")
    assert r.status_code == 200 and r.json()["success"] is True
    assert_error(await client.get(f"/api/v1/files/{file_id}"), 404, "NoSuchVersion")
    assert_error(await client.get(f"/api/v1/files/download/{file_id}"), 404, "NoSuchVersion")
    assert_error(await client.get("/api/v1/download/artifacts/docs/notes.txt"), 404, "NoSuchKey")


@pytest.mark.parametrize("bad", ["nothex", "0" * 31, "../../etc/passwd", "%2e%2e", "0" * 33])
async def test_malformed_file_ids_are_404(client: httpx.AsyncClient, bad: str) -> None:
    r = await client.get(f"/api/v1/files/{bad}")
    assert r.status_code == 404
    assert r.json()["code"] in ("NoSuchVersion", "NotFound")


async def test_update_rejects_bad_metadata(client: httpx.AsyncClient) -> None:
    up = await client.put("/api/v1/objects/artifacts/m.txt", content=b"x")
    file_id = up.json()["file_id"]
    r = await client.put(f"/api/v1/files/{file_id}", json={"metadata": [1, 2]})
    assert_error(r, 400, "InvalidArgument")
    r = await client.put(f"/api/v1/files/{file_id}", json={"metadata": {"x": "y" * 9000}})
    assert_error(r, 400, "MetadataTooLarge")
    r = await client.put(f"/api/v1/files/{file_id}", json={"file_id": "0" * 32})
    assert_error(r, 400, "InvalidArgument")  # internal fields are not settable


async def test_search(client: httpx.AsyncClient) -> None:
    async def up(bucket: str, key: str, data: bytes, tags: str = "") -> None:
        r = await client.put(
            f"/api/v1/objects/{bucket}/{key}", content=data, headers={"X-Tags": tags}
        )
        assert r.status_code == 200, r.text

    await up("models", "a/m1.pt", b"1" * 10, "stage=prod,team=x")
    await up("models", "a/m2.pt", b"2" * 100, "stage=dev,team=x")
    await up("models", "b/m3.pt", b"3" * 1000, "stage=prod,team=y")
    await up("datasets", "a/d.csv", b"4" * 50, "stage=prod")

    async def keys(**params: object) -> list[str]:
        r = await client.get("/api/v1/files", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"files", "truncated", "next_marker"}
        return sorted(f["key"] for f in body["files"])

    assert await keys(bucket="models") == ["a/m1.pt", "a/m2.pt", "b/m3.pt"]
    assert await keys(bucket="models", prefix="a/") == ["a/m1.pt", "a/m2.pt"]
    assert await keys(tag="stage=prod") == ["a/d.csv", "a/m1.pt", "b/m3.pt"]
    assert await keys(tag=["stage=prod", "team=x"]) == ["a/m1.pt"]
    assert await keys(min_size=100) == ["a/m2.pt", "b/m3.pt"]
    assert await keys(content_type="text/csv") == ["a/d.csv"]
    assert await keys(created_after="2000-01-01T00:00:00Z", bucket="datasets") == ["a/d.csv"]
    assert await keys(created_after="2999-01-01T00:00:00Z") == []

    page1 = (await client.get("/api/v1/files", params={"limit": 2})).json()
    assert page1["truncated"] is True and len(page1["files"]) == 2
    page2 = (
        await client.get("/api/v1/files", params={"limit": 2, "marker": page1["next_marker"]})
    ).json()
    ids = {f["file_id"] for f in page1["files"]} | {f["file_id"] for f in page2["files"]}
    assert len(ids) == 4 and page2["truncated"] is False

    assert_error(await client.get("/api/v1/files", params={"tag": "novalue"}), 400, "InvalidTag")
    assert_error(await client.get("/api/v1/files", params={"bucket": "nope"}), 404, "NoSuchBucket")
    assert_error(await client.get("/api/v1/files", params={"min_size": -1}), 400, "InvalidArgument")
