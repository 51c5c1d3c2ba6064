"""The small-request hot path with real processes: audit rows written off the request
path still reach the index (by themselves within a second, and on SIGTERM), and the
bucket cache of the write path never lets a write through that the index refuses,
while a second instance's changes are seen (bucket deletion at once, settings within
BUCKET_CACHE_SECONDS) and nothing of an object is cached."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.server.conftest import ServerFactory
from tests.stored_blobs import stored_blob_ids
from tfstorage.service.bucket_cache import BUCKET_CACHE_SECONDS

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]


def audited_keys(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM audit_log WHERE key IS NOT NULL")}


def test_audit_rows_reach_the_index_unasked_and_on_sigterm(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    db = server.data_dir / "index.db"
    with server.client() as c:
        assert c.put("/api/v1/objects/artifacts/a.bin", content=b"a").status_code == 200
        deadline = time.monotonic() + 5
        while "a.bin" not in audited_keys(db):  # no audit read asks for a flush here
            assert time.monotonic() < deadline, "the audit row was never written"
            time.sleep(0.05)
        for i in range(20):
            assert c.put(f"/api/v1/objects/artifacts/b{i}.bin", content=b"b").status_code == 200
    server.stop()  # SIGTERM right after the last 2xx: the lifespan's end flushes
    assert {f"b{i}.bin" for i in range(20)} <= audited_keys(db)


def test_bucket_cache_with_two_instances(make_server: ServerFactory, tmp_path: Path) -> None:
    shared = {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    data = tmp_path / "shared-data"
    a, b = make_server(shared, data_dir=data), make_server(shared, data_dir=data)
    with a.client() as ca, b.client() as cb:
        assert ca.post("/api/v1/buckets", json={"name": "hot"}).status_code == 201
        assert ca.put("/api/v1/objects/hot/one.bin", content=b"1").status_code == 200  # cached
        # Objects are never cached: each instance sees the other's write at once.
        assert cb.put("/api/v1/objects/hot/one.bin", content=b"22").status_code == 200
        assert ca.get("/api/v1/download/hot/one.bin").content == b"22"
        assert ca.head("/api/v1/download/hot/one.bin").headers["content-length"] == "2"

        # Deleted through B while A holds its record: A's write is still refused (the
        # commit reads the bucket in its own transaction), and nothing is left behind.
        assert cb.delete("/api/v1/buckets/hot", params={"force": "true"}).status_code == 200
        before = len(stored_blob_ids(data / "blobs"))
        refused = ca.put("/api/v1/objects/hot/two.bin", content=b"2")
        assert refused.status_code == 404 and refused.json()["code"] == "NoSuchBucket"
        assert len(stored_blob_ids(data / "blobs")) <= before
        assert ca.get("/api/v1/download/hot/two.bin").status_code == 404

        # Recreated through B with a type restriction: A applies it within the cache's
        # lifetime; through A itself a change applies to the very next write.
        made = cb.post("/api/v1/buckets", json={"name": "hot", "allowed_types": ["text"]})
        assert made.status_code == 201, made.text
        time.sleep(BUCKET_CACHE_SECONDS + 0.2)
        refused = ca.put("/api/v1/objects/hot/three.bin", content=b"3")
        assert refused.status_code == 415, refused.text
        assert ca.put("/api/v1/buckets/hot", json={"allowed_types": None}).status_code == 200
        assert ca.put("/api/v1/objects/hot/three.bin", content=b"3").status_code == 200
        assert ca.put("/api/v1/buckets/hot", json={"allowed_types": ["text"]}).status_code == 200
        assert ca.put("/api/v1/objects/hot/four.bin", content=b"4").status_code == 415
