"""Lifecycle rules over the API, on local disk and on S3: rules, dry runs, real runs,
the audit log, the per-run cap, and the bytes coming back after garbage collection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tests.api.conftest import ADMIN, assert_error, make_settings, stored_files
from tfstorage.api.app import create_app
from tfstorage.config import Settings
from tfstorage.index.tables import versions
from tfstorage.service.storage import Storage

pytestmark = pytest.mark.anyio

KEEP_LAST_3 = [
    {
        "id": "last-3-epochs",
        "filter": {"key_pattern": "job_*/epoch_*.ckpt"},
        "keep_last": {"count": 3, "group_depth": 1},
    }
]


REMOVALS = ("lifecycle_expire", "lifecycle_delete_version")


def storage_of(app: FastAPI) -> Storage:
    store: Storage = app.state.storage
    return store


async def put(
    client: httpx.AsyncClient, bucket: str, key: str, body: bytes, **headers: str
) -> dict[str, Any]:
    r = await client.put(f"/api/v1/objects/{bucket}/{key}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def keys(client: httpx.AsyncClient, bucket: str) -> set[str]:
    r = await client.get(f"/api/v1/list/{bucket}", params={"limit": 1000})
    assert r.status_code == 200 and not r.json()["truncated"]
    return {o["key"] for o in r.json()["objects"]}


async def audit_actions(client: httpx.AsyncClient, bucket: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await client.get(
            "/api/v1/audit", params={"bucket": bucket, "after": after, "limit": 1000}
        )
        assert r.status_code == 200, r.text
        page = r.json()
        entries += [e for e in page["entries"] if e["action"] in REMOVALS]
        if page["next_after"] is None:
            return entries
        after = page["next_after"]


async def test_keep_last_3_per_job_on_5_jobs_of_20_epochs(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    bucket = "checkpoints"
    # Protected checkpoints, uploaded first so the rule ranks them among the oldest.
    await put(client, bucket, "job_0/epoch_best.ckpt", b"best-0", **{"X-Tags": "protected=true"})
    await put(client, bucket, "job_3/epoch_best.ckpt", b"best-3", **{"X-Tags": "protected=true"})
    ids: dict[str, str] = {}
    for epoch in range(20):
        for job in range(5):
            key = f"job_{job}/epoch_{epoch:03d}.ckpt"
            ids[key] = (await put(client, bucket, key, f"{key}-weights".encode()))["file_id"]
    kept = {f"job_{j}/epoch_{e:03d}.ckpt" for j in range(5) for e in (17, 18, 19)}
    protected = {"job_0/epoch_best.ckpt", "job_3/epoch_best.ckpt"}
    doomed = set(ids) - kept
    assert len(doomed) == 85

    r = await client.put(f"/api/v1/buckets/{bucket}/lifecycle", json=KEEP_LAST_3)
    assert r.status_code == 200, r.text
    got = (await client.get(f"/api/v1/buckets/{bucket}/lifecycle")).json()
    assert got["rules"] == KEEP_LAST_3 and got["protected_tags"] == ["protected=true"]

    dry = (
        await client.post("/api/v1/lifecycle/run", params={"dry_run": "true", "bucket": bucket})
    ).json()
    assert dry["dry_run"] is True and dry["status"] == "done" and dry["count"] == 85
    assert {a["key"] for a in dry["actions"]} == doomed
    assert {a["file_id"] for a in dry["actions"]} == {ids[k] for k in doomed}
    assert all(a["bucket"] == bucket and a["rule"] == "last-3-epochs" for a in dry["actions"])
    assert all("keeping 3" in a["reason"] and a["action"] == "expire" for a in dry["actions"])
    assert await keys(client, bucket) == set(ids) | protected  # a dry run changes nothing
    assert await audit_actions(client, bucket) == []

    blobs_before = len(stored_files(settings))
    real = (await client.post("/api/v1/lifecycle/run", params={"bucket": bucket})).json()
    assert real["dry_run"] is False and real["status"] == "done" and real["count"] == 85
    assert {a["key"] for a in real["actions"]} == doomed
    assert await keys(client, bucket) == kept | protected
    for key in sorted(doomed)[:3]:
        r = await client.get(f"/api/v1/versions/{bucket}/{key}")
        assert_error(r, 404, "NoSuchKey")  # gone with every version, not in the trash

    logged = await audit_actions(client, bucket)
    assert sorted(e["file_id"] for e in logged) == sorted(ids[k] for k in doomed)
    assert {e["action"] for e in logged} == {"lifecycle_expire"}
    assert all(e["detail"]["rule"] == "last-3-epochs" and e["detail"]["run_id"] == real["run_id"]
               for e in logged)  # fmt: skip
    assert logged[0]["actor"].startswith("lifecycle")

    metrics = (await client.get("/metrics")).text
    assert 'storage_lifecycle_actions_total{action="expire",outcome="done"} 85.0' in metrics
    report = await storage_of(app).gc.run_once()
    assert report.unreferenced_blobs == 85
    assert len(stored_files(settings)) == blobs_before - 85
    again = (await client.post("/api/v1/lifecycle/run", params={"bucket": bucket})).json()
    assert again["count"] == 0 and again["skipped"] == 0


async def test_keep_top_k_by_val_loss(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/buckets", json={"name": "sweeps"})).status_code == 201
    losses = {
        f"trial_{i}/model.pt": loss
        for i, loss in enumerate([0.9, 0.4, 0.15, 0.6, 0.3, 0.05, 0.8, 0.2])
    }
    for key, loss in losses.items():
        meta = json.dumps({"metrics": {"val_loss": loss}})
        await put(client, "sweeps", key, key.encode(), **{"X-Metadata": meta})
    await put(client, "sweeps", "notes/readme.txt", b"no metric")  # never ranked
    rule = {
        "id": "best-3",
        "keep_top": {"field": "metrics.val_loss", "count": 3, "order": "lowest"},
    }
    assert (await client.put("/api/v1/buckets/sweeps/lifecycle", json=[rule])).status_code == 200
    run = (await client.post("/api/v1/lifecycle/run", params={"bucket": "sweeps"})).json()
    assert run["count"] == 5
    best = sorted(losses, key=losses.__getitem__)[:3]
    assert await keys(client, "sweeps") == set(best) | {"notes/readme.txt"}
    assert any("metrics.val_loss=0.9 ranks 8" in a["reason"] for a in run["actions"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"not": "a list"}, "must be a JSON list"),
        ([{"id": "x"}], "needs an action"),
        ([{"id": "x", "expire_days": -1}], "expire_days"),
        ([{"id": "x", "keep_last": {"count": 2, "group_pattern": "(["}}], "not a valid regex"),
        ("[", None),
    ],
)
async def test_bad_rules_answer_400_and_keep_the_old_ones(
    client: httpx.AsyncClient, body: Any, message: str | None
) -> None:
    old = [{"id": "old", "expire_days": 400}]
    assert (await client.put("/api/v1/buckets/models/lifecycle", json=old)).status_code == 200
    if isinstance(body, str):
        r = await client.put(
            "/api/v1/buckets/models/lifecycle",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
    else:
        r = await client.put("/api/v1/buckets/models/lifecycle", json=body)
        assert_error(r, 400, "InvalidArgument")
        assert message is not None and message in r.json()["error"]
    assert (await client.get("/api/v1/buckets/models/lifecycle")).json()["rules"] == old


async def test_rules_of_a_missing_bucket_and_delete(client: httpx.AsyncClient) -> None:
    rule = [{"id": "x", "expire_days": 1}]
    assert_error(await client.put("/api/v1/buckets/nope/lifecycle", json=rule), 404, "NoSuchBucket")
    assert_error(await client.get("/api/v1/buckets/nope/lifecycle"), 404, "NoSuchBucket")
    assert_error(await client.post("/api/v1/lifecycle/run?bucket=nope"), 404, "NoSuchBucket")
    assert (await client.put("/api/v1/buckets/jobs/lifecycle", json=rule)).status_code == 200
    r = await client.delete("/api/v1/buckets/jobs/lifecycle")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert (await client.get("/api/v1/buckets/jobs/lifecycle")).json()["rules"] == []
    # A bucket with rules can still be deleted.
    assert (await client.post("/api/v1/buckets", json={"name": "tmp-rules"})).status_code == 201
    assert (await client.put("/api/v1/buckets/tmp-rules/lifecycle", json=rule)).status_code == 200
    assert (await client.delete("/api/v1/buckets/tmp-rules")).status_code == 200


@pytest.fixture
async def capped_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(make_settings(tmp_path, lifecycle_max_deletions_per_run=4))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=ADMIN
        ) as c:
            yield c


async def test_a_run_stops_at_the_cap(capped_client: httpx.AsyncClient) -> None:
    client = capped_client
    for i in range(10):
        await put(client, "jobs", f"logs/{i:02d}.txt", f"log {i}".encode())
    rule = [{"id": "one", "keep_last": {"count": 1}}]
    assert (await client.put("/api/v1/buckets/jobs/lifecycle", json=rule)).status_code == 200
    dry = (await client.post("/api/v1/lifecycle/run?dry_run=true")).json()
    assert dry["status"] == "capped" and dry["count"] == 4
    first = (await client.post("/api/v1/lifecycle/run")).json()
    assert first["status"] == "capped" and first["count"] == 4
    assert len(await keys(client, "jobs")) == 6
    second = (await client.post("/api/v1/lifecycle/run")).json()
    third = (await client.post("/api/v1/lifecycle/run")).json()
    assert (second["status"], second["count"]) == ("capped", 4)
    assert (third["status"], third["count"]) == ("done", 1)
    assert await keys(client, "jobs") == {"logs/09.txt"}


async def test_the_default_rule_purges_versions_replaced_long_ago(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    ids = [
        (await put(client, "artifacts", "report.json", f"v{i}".encode()))["file_id"]
        for i in range(3)
    ]
    # Version 2 (which replaced version 1) was written 40 days ago; RETENTION_DAYS is 30.
    with storage_of(app).ctx.index.engine.begin() as conn:
        conn.execute(
            update(versions)
            .where(versions.c.file_id.in_(ids[:2]))
            .values(created_at=datetime.now(UTC) - timedelta(days=40))
        )
    dry = (await client.post("/api/v1/lifecycle/run?dry_run=true&bucket=artifacts")).json()
    assert [(a["file_id"], a["action"], a["rule"]) for a in dry["actions"]] == [
        (ids[0], "delete_version", "default-retention")
    ]
    assert (await client.post("/api/v1/lifecycle/run")).json()["count"] == 1
    listed = (await client.get("/api/v1/versions/artifacts/report.json")).json()["versions"]
    assert [v["file_id"] for v in listed] == [ids[2], ids[1]]


# archive tier ------------------------------------------------------------------------
def with_archive(settings: Settings, tmp_path: Path) -> Settings:
    if settings.storage_type == "local":
        extra: dict[str, Any] = {
            "archive_storage_type": "local",
            "archive_data_dir": tmp_path / "cold",
        }
    else:  # the same engine and bucket, beside the primary's prefix
        extra = {
            "archive_storage_type": "s3",
            "archive_s3_prefix": settings.s3_prefix.rstrip("/") + "-cold",
        }
    return settings.model_copy(update=extra)


def archive_files(settings: Settings) -> list[str]:
    if settings.archive_storage_type == "local":
        assert settings.archive_data_dir is not None
        return sorted(str(p) for p in settings.archive_data_dir.rglob("*") if p.is_file())
    return stored_files(settings.model_copy(update={"s3_prefix": settings.archive_s3_prefix}))


async def test_archive_moves_old_objects_and_reads_still_work(
    settings: Settings, tmp_path: Path
) -> None:
    cold = with_archive(settings, tmp_path)
    application = create_app(cold)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=ADMIN
        ) as client:
            bodies = {f"old/{n}.bin": f"{n} ".encode() * 5000 for n in ("a", "b")}
            bodies["new/c.bin"] = b"fresh"
            ids = {k: (await put(client, "artifacts", k, v))["file_id"] for k, v in bodies.items()}
            with storage_of(application).ctx.index.engine.begin() as conn:
                conn.execute(
                    update(versions)
                    .where(versions.c.key.like("old/%"))
                    .values(created_at=datetime.now(UTC) - timedelta(days=100))
                )
            rule = [{"id": "cold", "archive_days": 30}]
            r = await client.put("/api/v1/buckets/artifacts/lifecycle", json=rule)
            assert r.status_code == 200, r.text
            dry = (await client.post("/api/v1/lifecycle/run?dry_run=true")).json()
            assert sorted((a["key"], a["action"]) for a in dry["actions"]) == [
                ("old/a.bin", "archive"), ("old/b.bin", "archive")
            ]  # fmt: skip
            primary_before = len(stored_files(cold))
            run = (await client.post("/api/v1/lifecycle/run")).json()
            assert run["count"] == 2 and run["status"] == "done"
            assert len(stored_files(cold)) == primary_before - 2
            assert len(archive_files(cold)) == 2
            for key, body in bodies.items():
                got = await client.get(f"/api/v1/download/artifacts/{key}")
                assert got.status_code == 200 and got.content == body
            part = await client.get(
                "/api/v1/download/artifacts/old/a.bin", headers={"Range": "bytes=2-5"}
            )
            assert part.status_code == 206 and part.content == bodies["old/a.bin"][2:6]
            again = (await client.post("/api/v1/lifecycle/run?dry_run=true")).json()
            assert again["count"] == 0  # archived already
            assert await audit_actions(client, "artifacts") == []  # moves remove nothing
            entries = (await client.get("/api/v1/audit?bucket=artifacts")).json()["entries"]
            moved = [e["file_id"] for e in entries if e["action"] == "lifecycle_archive"]
            assert sorted(moved) == sorted([ids["old/a.bin"], ids["old/b.bin"]])
            # Same bytes uploaded again: deduplicated onto the archived blob, no new copy.
            await put(client, "artifacts", "copy/a.bin", bodies["old/a.bin"])
            assert len(stored_files(cold)) == primary_before - 2
            got = await client.get("/api/v1/download/artifacts/copy/a.bin")
            assert got.content == bodies["old/a.bin"]
            # Deleted for good: garbage collection removes the archived bytes too.
            for key in ("old/a.bin", "copy/a.bin"):
                versions_of = (await client.get(f"/api/v1/versions/artifacts/{key}")).json()
                for v in versions_of["versions"]:
                    assert (await client.delete(f"/api/v1/files/{v['file_id']}")).status_code == 200
            assert (await storage_of(application).gc.run_once()).unreferenced_blobs == 1
            assert len(archive_files(cold)) == 1
            assert (
                ids["old/b.bin"]
                in (await client.get("/api/v1/download/artifacts/old/b.bin")).headers["x-file-id"]
            )


async def test_archive_rules_need_an_archive_tier(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/api/v1/buckets/artifacts/lifecycle", json=[{"id": "c", "archive_days": 1}]
    )
    assert_error(r, 400, "InvalidArgument")
    assert "ARCHIVE_STORAGE_TYPE" in r.json()["error"]


async def test_a_run_that_lost_its_lease_stops(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its lease lapsed (a paused process) and another instance took it over: this run
    # must stop, not go on beside the new runner (each with its own cap).
    from tfstorage.index.tables import leases
    from tfstorage.service import lifecycle as lifecycle_service

    for i in range(6):
        await put(client, "artifacts", f"old/{i}.log", b"x")
    rule = [{"id": "one", "keep_last": {"count": 1}}]
    assert (await client.put("/api/v1/buckets/artifacts/lifecycle", json=rule)).status_code == 200
    lifecycle = storage_of(app).lifecycle
    real_apply = lifecycle._index.apply

    def apply_then_lose_the_lease(*args: Any, **kwargs: Any) -> bool:
        done = real_apply(*args, **kwargs)
        with lifecycle._index.engine.begin() as conn:
            conn.execute(
                update(leases).values(
                    holder="another-instance", expires_at=datetime.now(UTC) + timedelta(hours=1)
                )
            )
        return done

    monkeypatch.setattr(lifecycle_service, "_RENEW_EVERY", 1)
    monkeypatch.setattr(lifecycle._index, "apply", apply_then_lose_the_lease)
    run = (await client.post("/api/v1/lifecycle/run?bucket=artifacts")).json()
    assert (run["status"], run["count"]) == ("busy", 1)
    assert len(await keys(client, "artifacts")) == 5
