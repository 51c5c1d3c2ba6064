"""Two instances over one PostgreSQL index and one S3 engine, as the README's "Scaling
out" section sets them up: behind a reverse proxy, presigned links name the proxy and
work through it; a replica copy one instance could not make is caught up by the other
after the first is gone for good."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.s3.fixtures import SeaweedFS, object_keys
from tests.server.conftest import ADMIN_TOKEN, ServerFactory, ServerProcess, free_port
from tests.server.reverse_proxy import ReverseProxy

pytestmark = [pytest.mark.server, pytest.mark.postgres]

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def shared_env(postgres_database: str, seaweedfs: SeaweedFS) -> dict[str, str]:
    """What every instance must agree on: the index, the engine, the bucket and prefix."""
    return {
        "DATABASE_URL": postgres_database,
        "STORAGE_TYPE": "s3",
        "S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "MINIO_ACCESS_KEY": seaweedfs.access_key,
        "MINIO_SECRET_KEY": seaweedfs.secret_key,
        "S3_REGION": seaweedfs.region,
        "S3_BUCKET": seaweedfs.bucket,
        "S3_PREFIX": f"scale-{uuid.uuid4().hex[:10]}",
        "S3_TIMEOUT_SECONDS": "2",
        "S3_MAX_RETRIES": "0",
    }


def cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFSTORAGE_")}
    env.update(TFSTORAGE_URL=url, TFSTORAGE_TOKEN=ADMIN_TOKEN, DATA_DIR="no-such-dir")
    return subprocess.run(
        [sys.executable, "-m", "tfstorage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def proxy_over() -> Iterator[Callable[..., ReverseProxy]]:
    proxies: list[ReverseProxy] = []

    def start(*servers: ServerProcess) -> ReverseProxy:
        proxies.append(ReverseProxy([s.base_url for s in servers]).start())
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()


def test_presigned_links_made_through_the_proxy_work_through_it(
    make_server: ServerFactory,
    postgres_database: str,
    seaweedfs: SeaweedFS,
    proxy_over: Callable[..., ReverseProxy],
) -> None:
    env = shared_env(postgres_database, seaweedfs)
    a, b = make_server(env), make_server(env)
    proxy = proxy_over(a, b)
    with httpx.Client(base_url=proxy.url, headers=ADMIN, timeout=30) as c, httpx.Client() as anon:
        assert c.put("/api/v1/objects/datasets/shared.csv", content=b"a,b\n").status_code == 200
        r = c.post("/api/v1/presign", json={"method": "GET", "bucket": "datasets",
                                            "key": "shared.csv", "expires_in": 600})  # fmt: skip
        assert r.status_code == 200, r.text
        url = r.json()["url"]
        assert url.startswith(proxy.url + "/api/v1/download/datasets/shared.csv?"), url
        got = anon.get(url)
        assert got.status_code == 200 and got.content == b"a,b\n", got.text
        assert proxy.served[-1] != proxy.served[-2]  # issued by one instance, used on the other

        r = c.post("/api/v1/presign", json={"method": "PUT", "bucket": "datasets",
                                            "key": "in/upload.csv", "max_size": 100})  # fmt: skip
        put_url = r.json()["url"]
        assert put_url.startswith(proxy.url + "/api/v1/objects/datasets/in/upload.csv?")
        assert anon.put(put_url, content=b"x,y\n").status_code == 200
        assert c.get("/api/v1/download/datasets/in/upload.csv").content == b"x,y\n"

        # Rotating the key (through the proxy, so on either instance) kills the link on
        # both: the key is the index's, each instance re-reads it within seconds.
        rotated = cli("token", "rotate-presign-key", "--yes", url=proxy.url)
        assert rotated.returncode == 0, rotated.stderr
        for server in (a, b):
            direct = server.base_url + url.removeprefix(proxy.url)
            assert eventually(lambda d=direct: anon.get(d).status_code == 403), server.log_tail()
            assert anon.get(direct).json()["code"] == "AccessDenied"


def pending_replication(server: ServerProcess) -> Any:
    with server.client() as c:
        return c.get("/api/v1/storage/health").json()["blob_store"]["pending_replication"]


def test_a_replica_copy_one_instance_missed_is_caught_up_by_another(
    make_server: ServerFactory,
    postgres_database: str,
    seaweedfs: SeaweedFS,
    s3_bucket_factory: Callable[[], str],
) -> None:
    replica_bucket = s3_bucket_factory()
    seaweedfs.client().create_bucket(Bucket=replica_bucket)
    env = {
        **shared_env(postgres_database, seaweedfs),
        "REPLICA_STORAGE_TYPE": "s3",
        "REPLICA_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
        "REPLICA_S3_BUCKET": replica_bucket,
    }
    b = make_server(env)
    # Instance A cannot reach the replica (a network partition): nothing listens there.
    a = make_server({**env, "REPLICA_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    data = os.urandom(300_000)
    with a.client() as ca:
        r = ca.put("/api/v1/objects/models/only-on-primary.bin", content=data)
        assert r.status_code == 200, r.text
    assert object_keys(seaweedfs, "", bucket=replica_bucket) == []
    assert pending_replication(b) == 1  # A's journal entry is in the shared index

    a.kill()  # gone for good: no shutdown, and its DATA_DIR with it
    shutil.rmtree(a.data_dir)

    with b.client() as cb:  # what B's maintenance loop runs too (`tfstorage replicate`)
        report = cb.post("/api/v1/storage/replicate").json()
    assert (report["copied"], report["failed"], report["busy"]) == (1, 0, False), report
    [key] = object_keys(seaweedfs, "", bucket=replica_bucket)
    copy = seaweedfs.client().get_object(Bucket=replica_bucket, Key=key)["Body"].read()
    assert copy == data
    assert pending_replication(b) == 0
