"""Lifecycle with real processes: two instances on one PostgreSQL index running it at
the same time (scheduled and on demand), and the CLI against a locked version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ADMIN_TOKEN, ServerFactory
from tests.server.helpers import list_all

pytestmark = pytest.mark.server

RULES = [
    {
        "id": "last-3",
        "filter": {"key_pattern": "job_*/epoch_*.ckpt"},
        "keep_last": {"count": 3, "group_depth": 1},
    }
]


def cli(*args: str, server_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TFSTORAGE_URL": server_url, "TFSTORAGE_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        [sys.executable, "-m", "tfstorage", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def removals(client: httpx.Client, bucket: str) -> list[dict[str, Any]]:
    found, after = [], 0
    while True:
        r = client.get("/api/v1/audit", params={"bucket": bucket, "after": after, "limit": 1000})
        assert r.status_code == 200, r.text
        page = r.json()
        found += [e for e in page["entries"] if e["action"].startswith("lifecycle_")
                  and e["action"] not in ("lifecycle_set", "lifecycle_delete")]  # fmt: skip
        if page["next_after"] is None:
            return found
        after = page["next_after"]


@pytest.mark.postgres
def test_two_instances_expire_each_object_once(
    make_server: ServerFactory, postgres_database: str, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"  # one blob directory, one index: two instances of one service
    env = {"DATABASE_URL": postgres_database, "LIFECYCLE_INTERVAL_SECONDS": "0.2"}
    a = make_server(env, data_dir=shared)
    b = make_server(env, data_dir=shared)
    bucket = "checkpoints"
    ids: dict[str, str] = {}
    with a.client() as ca, b.client() as cb:
        for epoch in range(20):
            for job in range(5):
                key = f"job_{job}/epoch_{epoch:03d}.ckpt"
                r = (ca if job % 2 else cb).put(
                    f"/api/v1/objects/{bucket}/{key}", content=key.encode()
                )
                assert r.status_code == 200, r.text
                ids[key] = r.json()["file_id"]
        kept = {f"job_{j}/epoch_{e:03d}.ckpt" for j in range(5) for e in (17, 18, 19)}
        doomed = {ids[k] for k in set(ids) - kept}

        # From now on both schedulers race, and on-demand runs on both instances too.
        assert ca.put(f"/api/v1/buckets/{bucket}/lifecycle", json=RULES).status_code == 200
        reports: list[dict[str, Any]] = []
        errors: list[BaseException] = []

        def hammer(base_url: str) -> None:
            try:
                with httpx.Client(base_url=base_url, timeout=60,
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as c:  # fmt: skip
                    for _ in range(5):
                        r = c.post("/api/v1/lifecycle/run", params={"bucket": bucket})
                        assert r.status_code == 200, r.text
                        reports.append(r.json())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(s.base_url,)) for s in (a, b, a, b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        deadline = time.monotonic() + 30
        while set(list_all(ca, bucket)) != kept and time.monotonic() < deadline:
            time.sleep(0.1)

        assert set(list_all(ca, bucket)) == kept == set(list_all(cb, bucket))
        logged = removals(ca, bucket)
        per_file = Counter(e["file_id"] for e in logged)
        assert set(per_file) == doomed  # nothing extra
        assert max(per_file.values()) == 1  # nothing twice
        on_demand = [a["file_id"] for r in reports for a in r["actions"]]
        assert len(on_demand) == len(set(on_demand)) and set(on_demand) <= doomed
        for key in kept:
            assert ca.get(f"/api/v1/download/{bucket}/{key}").content == key.encode()
        # Neither instance has anything left to do.
        for c in (ca, cb):
            final = c.post("/api/v1/lifecycle/run", params={"bucket": bucket, "dry_run": True})
            assert final.json()["count"] == 0


def test_cli_lifecycle_and_rm_of_a_locked_version(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server({"LIFECYCLE_INTERVAL_SECONDS": "0"})
    url = server.base_url
    with server.client() as c:
        ids = []
        for i in range(4):
            r = c.put(f"/api/v1/objects/jobs/logs/{i}.txt", content=f"log {i}".encode())
            ids.append(r.json()["file_id"])
        until = "2099-01-01T00:00:00Z"
        r = c.put(f"/api/v1/files/{ids[0]}/retention", json={"retain_until": until})
        assert r.status_code == 200

        rules = tmp_path / "rules.json"
        rules.write_text(json.dumps([{"id": "newest-1", "keep_last": {"count": 1}}]))
        done = cli("lifecycle", "set", "jobs", str(rules), server_url=url)
        assert done.returncode == 0, done.stderr
        shown = cli("lifecycle", "get", "jobs", server_url=url)
        assert json.loads(shown.stdout) == json.loads(rules.read_text())

        dry = cli("lifecycle", "run", "--dry-run", "--bucket", "jobs", "--json", server_url=url)
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["dry_run"] is True
        assert sorted(a["file_id"] for a in planned["actions"]) == sorted(
            ids[1:3]
        )  # not the locked

        rm = cli("rm", "tfs://jobs/logs/0.txt", "--version-id", ids[0], server_url=url)
        assert rm.returncode == 1 and "ObjectLocked" in rm.stderr
        assert c.get(f"/api/v1/files/{ids[0]}").status_code == 200

        real = cli("lifecycle", "run", "--bucket", "jobs", server_url=url)
        assert real.returncode == 0, real.stderr
        assert "removed 2" in real.stdout
        assert set(list_all(c, "jobs")) == {"logs/0.txt", "logs/3.txt"}

        # A plain rm moves the key to the trash (an S3 delete marker): allowed, and the
        # locked version stays, restorable.
        trashed = cli("rm", "tfs://jobs/logs/0.txt", server_url=url)
        assert trashed.returncode == 0, trashed.stderr
        assert c.get(f"/api/v1/files/{ids[0]}").status_code == 200
        assert c.post("/api/v1/restore/jobs/logs/0.txt").status_code == 200
        assert c.get("/api/v1/download/jobs/logs/0.txt").content == b"log 0"
