"""Objects by path: raw PUT, form uploads, download with ranges and conditionals,
listing, delete, versions, restore."""

from __future__ import annotations

import base64
import hashlib
import os

import httpx
import pytest

from tests.api.conftest import assert_error

pytestmark = pytest.mark.anyio


async def put(client: httpx.AsyncClient, bucket: str, key: str, data: bytes, **headers: str):
    r = await client.put(f"/api/v1/objects/{bucket}/{key}", content=data, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_raw_put_then_download_round_trip(client: httpx.AsyncClient) -> None:
    data = os.urandom(300_000)
    body = await put(client, "artifacts", "runs/1/out.bin", data)
    assert body["success"] is True
    assert body["bucket"] == "artifacts" and body["key"] == "runs/1/out.bin"
    assert body["size"] == body["size_bytes"] == len(data)
    assert body["etag"] == hashlib.md5(data).hexdigest()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["files"][0]["file_id"] == body["file_id"]

    r = await client.get("/api/v1/download/artifacts/runs/1/out.bin")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["etag"] == f'"{body["etag"]}"'
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-disposition"] == 'attachment; filename="out.bin"'
    assert "last-modified" in r.headers


async def test_form_upload_seed_shape(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/upload",
        files={"file": ("model.pkl", b"weights")},
        data={"bucket": "models", "key": "user1/model_v1.pkl"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    # The original service's response fields.
    for field in ("success", "message", "bucket", "key", "size", "etag"):
        assert field in body
    assert body["message"] == "File uploaded successfully"
    assert (body["bucket"], body["key"], body["size"]) == ("models", "user1/model_v1.pkl", 7)
    assert body["etag"] == hashlib.md5(b"weights").hexdigest()


async def test_stream_upload_route(client: httpx.AsyncClient) -> None:
    data = os.urandom(2 * 1024 * 1024 + 17)
    r = await client.post(
        "/api/v1/upload/stream",
        files={"file": ("big.ckpt", data)},
        data={"bucket": "checkpoints", "key": "job_1/big.ckpt"},
    )
    assert r.status_code == 200, r.text
    got = await client.get("/api/v1/download/checkpoints/job_1/big.ckpt")
    assert got.content == data


async def test_fields_after_the_file_still_apply(client: httpx.AsyncClient) -> None:
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nhello\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="bucket"\r\n\r\nartifacts\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\nlate/a.txt\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    r = await client.post(
        "/api/v1/upload",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["bucket"], r.json()["key"]) == ("artifacts", "late/a.txt")
    assert (await client.get("/api/v1/download/artifacts/late/a.txt")).content == b"hello"


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    await put(client, "artifacts", "h.bin", b"x" * 1000)
    r = await client.head("/api/v1/download/artifacts/h.bin")
    assert r.status_code == 200
    assert r.headers["content-length"] == "1000"
    assert r.content == b""


@pytest.mark.parametrize(
    ("header", "status", "expected"),
    [
        ("bytes=0-9", 206, slice(0, 10)),
        ("bytes=10-", 206, slice(10, None)),
        ("bytes=-5", 206, slice(-5, None)),
        ("bytes=90-200", 206, slice(90, 100)),
        ("bytes=99-99", 206, slice(99, 100)),
    ],
)
async def test_single_range(
    client: httpx.AsyncClient, header: str, status: int, expected: slice
) -> None:
    data = bytes(range(100))
    await put(client, "artifacts", "r.bin", data)
    r = await client.get("/api/v1/download/artifacts/r.bin", headers={"Range": header})
    assert r.status_code == status
    assert r.content == data[expected]
    part = data[expected]
    start = data.index(part[0]) if part else 0
    assert r.headers["content-range"] == f"bytes {start}-{start + len(part) - 1}/100"
    assert r.headers["content-length"] == str(len(part))


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=0-1,5-6", "bytes=5-1", "bytes=abc", "bytes=-0"]
)
async def test_bad_ranges_are_416(client: httpx.AsyncClient, header: str) -> None:
    await put(client, "artifacts", "r.bin", bytes(100))
    r = await client.get("/api/v1/download/artifacts/r.bin", headers={"Range": header})
    assert_error(r, 416, "InvalidRange")
    assert r.headers["content-range"] == "bytes */100"


@pytest.mark.parametrize("header", ["items=0-1", "none"])
async def test_other_range_units_are_ignored(client: httpx.AsyncClient, header: str) -> None:
    await put(client, "artifacts", "r.bin", bytes(range(100)))
    r = await client.get("/api/v1/download/artifacts/r.bin", headers={"Range": header})
    assert r.status_code == 200 and r.content == bytes(range(100))


async def test_range_unit_is_case_insensitive(client: httpx.AsyncClient) -> None:
    await put(client, "artifacts", "r.bin", bytes(range(100)))
    r = await client.get("/api/v1/download/artifacts/r.bin", headers={"Range": "Bytes=1-2"})
    assert r.status_code == 206 and r.content == bytes([1, 2])


async def test_thousand_ranges_refused_quickly(client: httpx.AsyncClient) -> None:
    await put(client, "artifacts", "r.bin", bytes(100))
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(1000))
    r = await client.get("/api/v1/download/artifacts/r.bin", headers={"Range": header})
    assert_error(r, 416, "InvalidRange")


async def test_conditional_requests(client: httpx.AsyncClient) -> None:
    body = await put(client, "artifacts", "c.bin", b"abc")
    etag = f'"{body["etag"]}"'
    url = "/api/v1/download/artifacts/c.bin"
    r = await client.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status_code == 200
    last_modified = (await client.head(url)).headers["last-modified"]
    assert (await client.get(url, headers={"If-Modified-Since": last_modified})).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await client.get(url, headers={"If-Modified-Since": old})).status_code == 200
    r = await client.get(url, headers={"If-Unmodified-Since": old})
    assert_error(r, 412, "PreconditionFailed")
    assert (
        await client.get(url, headers={"If-Unmodified-Since": last_modified})
    ).status_code == 200
    # A date that does not parse: the condition is ignored (RFC 9110 13.1.4), not failed.
    assert (await client.get(url, headers={"If-Unmodified-Since": "soon"})).status_code == 200
    assert_error(await client.get(url, headers={"If-Match": '"nope"'}), 412, "PreconditionFailed")
    assert (await client.get(url, headers={"If-Match": etag})).status_code == 200
    # If-Match compares strongly: a weak ETag never matches.
    assert_error(
        await client.get(url, headers={"If-Match": "W/" + etag}), 412, "PreconditionFailed"
    )
    # If-Range with a stale ETag ignores the Range and sends the whole object.
    r = await client.get(url, headers={"Range": "bytes=0-0", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == b"abc"
    r = await client.get(url, headers={"Range": "bytes=0-0", "If-Range": etag})
    assert r.status_code == 206 and r.content == b"a"


async def test_client_checksums(client: httpx.AsyncClient) -> None:
    data = b"payload"
    good_md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    good_sha = hashlib.sha256(data).hexdigest()
    await put(client, "artifacts", "ok.bin", data, **{"Content-MD5": good_md5})
    await put(client, "artifacts", "ok2.bin", data, **{"X-Checksum-SHA256": good_sha})
    sha_b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
    await put(client, "artifacts", "ok3.bin", data, **{"X-Checksum-SHA256": sha_b64})

    bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = await client.put(
        "/api/v1/objects/artifacts/bad.bin", content=data, headers={"Content-MD5": bad_md5}
    )
    assert_error(r, 400, "BadDigest")
    r = await client.put(
        "/api/v1/objects/artifacts/bad.bin", content=data, headers={"X-Checksum-SHA256": "0" * 64}
    )
    assert_error(r, 400, "BadDigest")
    r = await client.put(
        "/api/v1/objects/artifacts/bad.bin", content=data, headers={"Content-MD5": "zz"}
    )
    assert_error(r, 400, "InvalidDigest")
    assert_error(await client.get("/api/v1/download/artifacts/bad.bin"), 404, "NoSuchKey")


async def test_bad_digest_keeps_previous_version(client: httpx.AsyncClient) -> None:
    await put(client, "artifacts", "keep.bin", b"v1")
    r = await client.put(
        "/api/v1/objects/artifacts/keep.bin", content=b"v2", headers={"X-Checksum-SHA256": "1" * 64}
    )
    assert_error(r, 400, "BadDigest")
    assert (await client.get("/api/v1/download/artifacts/keep.bin")).content == b"v1"
    versions = (await client.get("/api/v1/versions/artifacts/keep.bin")).json()["versions"]
    assert len(versions) == 1


async def test_metadata_and_tags_by_header(client: httpx.AsyncClient) -> None:
    body = await put(
        client,
        "models",
        "m.pt",
        b"w",
        **{"X-Metadata": '{"epoch": 3}', "X-Tags": "stage=prod,team=a"},
    )
    assert body["metadata"] == {"epoch": 3}
    assert body["tags"] == {"stage": "prod", "team": "a"}


async def test_listing_order_paging_and_delimiter(client: httpx.AsyncClient) -> None:
    keys = ["b/2", "a/1", "a/2", "c", "B", "a/sub/3", "é"]
    for k in keys:
        await put(client, "artifacts", k, k.encode())
    r = await client.get("/api/v1/list/artifacts")
    body = r.json()
    assert [o["key"] for o in body["objects"]] == sorted(keys, key=lambda k: k.encode())
    assert body["truncated"] is False and body["next_marker"] == ""
    assert set(body["objects"][0]) >= {"key", "size", "last_modified", "etag", "content_type"}

    seen: list[str] = []
    marker = ""
    while True:
        page = (
            await client.get("/api/v1/list/artifacts", params={"limit": 2, "marker": marker})
        ).json()
        seen += [o["key"] for o in page["objects"]]
        if not page["truncated"]:
            break
        marker = page["next_marker"]
    assert seen == sorted(keys, key=lambda k: k.encode())

    r = await client.get("/api/v1/list/artifacts", params={"delimiter": "/"})
    body = r.json()
    assert body["common_prefixes"] == ["a/", "b/"]
    assert [o["key"] for o in body["objects"]] == ["B", "c", "é"]
    r = await client.get("/api/v1/list/artifacts", params={"prefix": "a/", "delimiter": "/"})
    assert [o["key"] for o in r.json()["objects"]] == ["a/1", "a/2"]
    assert r.json()["common_prefixes"] == ["a/sub/"]
    same = await client.get("/api/v1/buckets/artifacts/files", params={"prefix": "a/"})
    assert [o["key"] for o in same.json()["objects"]] == ["a/1", "a/2", "a/sub/3"]


async def test_prefix_is_literal(client: httpx.AsyncClient) -> None:
    for k in ["a%b", "axb", "a_c", "abc"]:
        await put(client, "artifacts", k, b"1")
    r = await client.get("/api/v1/list/artifacts", params={"prefix": "a%"})
    assert [o["key"] for o in r.json()["objects"]] == ["a%b"]
    r = await client.get("/api/v1/list/artifacts", params={"prefix": "a_"})
    assert [o["key"] for o in r.json()["objects"]] == ["a_c"]


async def test_overwrite_versions_delete_restore(client: httpx.AsyncClient) -> None:
    v1 = await put(client, "artifacts", "doc.txt", b"one")
    v2 = await put(client, "artifacts", "doc.txt", b"two")
    assert v1["file_id"] != v2["file_id"]
    assert (await client.get("/api/v1/download/artifacts/doc.txt")).content == b"two"
    old = await client.get(
        "/api/v1/download/artifacts/doc.txt", params={"version_id": v1["file_id"]}
    )
    assert old.content == b"one"

    versions = (await client.get("/api/v1/versions/artifacts/doc.txt")).json()["versions"]
    assert [v["file_id"] for v in versions] == [v2["file_id"], v1["file_id"]]
    assert [v["is_latest"] for v in versions] == [True, False]

    r = await client.delete("/api/v1/delete/artifacts/doc.txt")
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "message": "File deleted successfully",
        "bucket": "artifacts",
        "key": "doc.txt",
        "file_id": v2["file_id"],
    }
    assert_error(await client.get("/api/v1/download/artifacts/doc.txt"), 404, "NoSuchKey")
    listing = (await client.get("/api/v1/list/artifacts")).json()
    assert listing["objects"] == []
    assert_error(await client.delete("/api/v1/delete/artifacts/doc.txt"), 404, "NoSuchKey")
    # Versions stay visible (and restorable) while the key is in the trash.
    versions = (await client.get("/api/v1/versions/artifacts/doc.txt")).json()["versions"]
    assert versions[0]["deleted"] is True

    r = await client.post("/api/v1/restore/artifacts/doc.txt")
    assert r.status_code == 200 and r.json()["file_id"] == v2["file_id"]
    assert (await client.get("/api/v1/download/artifacts/doc.txt")).content == b"two"

    r = await client.post("/api/v1/restore/artifacts/doc.txt", params={"version_id": v1["file_id"]})
    restored = r.json()
    assert restored["file_id"] not in (v1["file_id"], v2["file_id"])
    assert restored["sha256"] == v1["sha256"]
    assert (await client.get("/api/v1/download/artifacts/doc.txt")).content == b"one"


async def test_permanent_version_delete_by_key(client: httpx.AsyncClient) -> None:
    v1 = await put(client, "artifacts", "p.txt", b"one")
    v2 = await put(client, "artifacts", "p.txt", b"two")
    r = await client.delete("/api/v1/delete/artifacts/p.txt", params={"version_id": v2["file_id"]})
    assert r.status_code == 200
    assert (await client.get("/api/v1/download/artifacts/p.txt")).content == b"one"
    assert_error(await client.get(f"/api/v1/files/{v2['file_id']}"), 404, "NoSuchVersion")
    r = await client.delete(
        "/api/v1/delete/artifacts/other.txt", params={"version_id": v1["file_id"]}
    )
    assert_error(r, 404, "NoSuchKey")


async def test_version_id_of_other_key_is_404(client: httpx.AsyncClient) -> None:
    a = await put(client, "artifacts", "a.txt", b"a")
    await put(client, "artifacts", "b.txt", b"b")
    r = await client.get("/api/v1/download/artifacts/b.txt", params={"version_id": a["file_id"]})
    assert_error(r, 404, "NoSuchKey")


async def test_dedup_shares_bytes(client: httpx.AsyncClient) -> None:
    data = os.urandom(50_000)
    first = await put(client, "artifacts", "one.bin", data)
    second = await put(client, "datasets", "copy.npy", data)
    assert first["deduplicated"] is False and second["deduplicated"] is True
    stats = (await client.get("/api/v1/stats")).json()
    assert stats["dedup"]["saved_bytes"] == len(data)


async def test_unknown_bucket_and_key(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/download/nobucket/x"), 404, "NoSuchBucket")
    assert_error(await client.get("/api/v1/download/artifacts/x"), 404, "NoSuchKey")
    assert_error(await client.get("/api/v1/list/nobucket"), 404, "NoSuchBucket")
    r = await client.put("/api/v1/objects/nobucket/x", content=b"1")
    assert_error(r, 404, "NoSuchBucket")
    assert_error(await client.get("/api/v1/versions/artifacts/nothing"), 404, "NoSuchKey")
    assert_error(await client.post("/api/v1/restore/artifacts/nothing"), 404, "NoSuchKey")


async def test_allowed_types(client: httpx.AsyncClient) -> None:
    for name in ("model.safetensors", "m.gguf", "w.pt", "x.onnx"):
        await put(client, "models", name, b"1")
    for name in ("d.parquet", "d.jsonl", "d.npz", "d.tfrecord"):
        await put(client, "datasets", name, b"1")
    r = await client.put("/api/v1/objects/models/evil.exe", content=b"MZ")
    assert_error(r, 415, "UnsupportedFileType")
    r = await client.post(
        "/api/v1/upload", files={"file": ("x.sh", b"#!")}, data={"bucket": "datasets"}
    )
    assert_error(r, 415, "UnsupportedFileType")
    await put(client, "artifacts", "anything.exe", b"MZ")  # other buckets accept any type
