"""Retention locks and legal holds: a locked version survives every delete path until
its date (even for admins), then goes like any other."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tests.api.conftest import assert_error, stored_files
from tests.api.test_access import bearer, new_token
from tfstorage.config import Settings
from tfstorage.index.tables import versions
from tfstorage.service.storage import Storage

pytestmark = pytest.mark.anyio

BUCKET = "checkpoints"


def storage_of(app: FastAPI) -> Storage:
    store: Storage = app.state.storage
    return store


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


async def upload(client: httpx.AsyncClient, key: str, body: bytes, bucket: str = BUCKET) -> str:
    r = await client.put(f"/api/v1/objects/{bucket}/{key}", content=body)
    assert r.status_code == 200, r.text
    return str(r.json()["file_id"])


async def lock(client: httpx.AsyncClient, file_id: str, **change: object) -> httpx.Response:
    return await client.put(f"/api/v1/files/{file_id}/retention", json=change)


def let_the_date_pass(app: FastAPI, file_id: str) -> None:
    """The retention date comes (written into the index: tests do not wait days)."""
    engine = storage_of(app).ctx.index.engine
    with engine.begin() as conn:
        conn.execute(
            update(versions)
            .where(versions.c.file_id == file_id)
            .values(retain_until=datetime.now(UTC) - timedelta(seconds=1))
        )


async def test_a_locked_version_survives_every_delete_path_until_its_date(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    file_id = await upload(client, "run/epoch_001.ckpt", b"precious weights")
    r = await lock(client, file_id, retain_until=iso(in_days(30)))
    assert r.status_code == 200, r.text
    assert r.json()["locked"] is True and r.json()["legal_hold"] is False
    assert (await client.get(f"/api/v1/files/{file_id}/retention")).json()["locked"] is True

    # Permanent deletes of the version, by id or by key, refused even for the admin.
    assert_error(await client.delete(f"/api/v1/files/{file_id}"), 403, "ObjectLocked")
    r = await client.delete(f"/api/v1/delete/{BUCKET}/run/epoch_001.ckpt?version_id={file_id}")
    assert_error(r, 403, "ObjectLocked")
    assert "retained until" in r.json()["error"]

    # Lifecycle: a rule that would remove it leaves it (and so does a real run).
    await upload(client, "run/epoch_002.ckpt", b"newer weights")
    rule = [{"id": "last-1", "keep_last": {"count": 1}}]
    assert (await client.put(f"/api/v1/buckets/{BUCKET}/lifecycle", json=rule)).status_code == 200
    dry = (await client.post(f"/api/v1/lifecycle/run?dry_run=true&bucket={BUCKET}")).json()
    assert dry["count"] == 0
    assert (await client.post(f"/api/v1/lifecycle/run?bucket={BUCKET}")).json()["count"] == 0

    # A forced bucket delete would take it along: refused.
    r = await client.delete(f"/api/v1/buckets/{BUCKET}?force=true")
    assert_error(r, 403, "ObjectLocked")

    # Trash (like an S3 delete marker) hides the key but destroys nothing: the trash
    # purge skips it however late it is, and it can be restored.
    assert (await client.delete(f"/api/v1/delete/{BUCKET}/run/epoch_001.ckpt")).status_code == 200
    gc = storage_of(app).gc
    await gc.run_once(now=time.time() + 400 * 86400)
    versions_after = (await client.get(f"/api/v1/versions/{BUCKET}/run/epoch_001.ckpt")).json()
    assert [v["file_id"] for v in versions_after["versions"]] == [file_id]
    r = await client.post(f"/api/v1/restore/{BUCKET}/run/epoch_001.ckpt")
    assert r.status_code == 200
    got = await client.get(f"/api/v1/download/{BUCKET}/run/epoch_001.ckpt")
    assert got.content == b"precious weights"

    # Its date comes: now every path works again.
    let_the_date_pass(app, file_id)
    assert (await client.get(f"/api/v1/files/{file_id}/retention")).json()["locked"] is False
    run = (await client.post(f"/api/v1/lifecycle/run?bucket={BUCKET}")).json()
    assert [a["file_id"] for a in run["actions"]] == [file_id]
    assert_error(await client.get(f"/api/v1/files/{file_id}"), 404, "NoSuchVersion")


async def test_trash_purge_waits_for_the_lock_then_purges(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    file_id = await upload(client, "trash/me.ckpt", b"x")
    assert (await lock(client, file_id, legal_hold=True)).json()["locked"] is True
    assert (await client.delete(f"/api/v1/delete/{BUCKET}/trash/me.ckpt")).status_code == 200
    gc = storage_of(app).gc
    assert (await gc.run_once(now=time.time() + 400 * 86400)).purged_versions == 0
    r = await lock(client, file_id, legal_hold=False)
    assert r.status_code == 200 and r.json()["locked"] is False
    assert (await gc.run_once(now=time.time() + 400 * 86400)).purged_versions == 1
    assert_error(await client.get(f"/api/v1/files/{file_id}"), 404, "NoSuchVersion")


async def test_overwriting_a_locked_version_in_an_unversioned_bucket_is_refused(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    r = await client.post("/api/v1/buckets", json={"name": "latest-only", "versioning": False})
    assert r.status_code == 201
    file_id = await upload(client, "model.pt", b"v1", bucket="latest-only")
    assert (await lock(client, file_id, retain_until=iso(in_days(1)))).status_code == 200
    blobs = stored_files(settings)
    r = await client.put("/api/v1/objects/latest-only/model.pt", content=b"v2 replaces v1")
    assert_error(r, 403, "ObjectLocked")
    assert "cannot overwrite" in r.json()["error"]
    got = await client.get("/api/v1/download/latest-only/model.pt")
    assert got.content == b"v1" and got.headers["x-file-id"] == file_id
    assert stored_files(settings) == blobs  # the refused upload left no bytes behind
    let_the_date_pass(app, file_id)
    r = await client.put("/api/v1/objects/latest-only/model.pt", content=b"v2 replaces v1")
    assert r.status_code == 200
    assert_error(await client.get(f"/api/v1/files/{file_id}"), 404, "NoSuchVersion")


async def test_retention_can_be_extended_never_shortened(client: httpx.AsyncClient) -> None:
    file_id = await upload(client, "r/x.ckpt", b"x")
    far, near = in_days(30), in_days(10)
    assert (await lock(client, file_id, retain_until=iso(far))).status_code == 200
    r = await lock(client, file_id, retain_until=iso(near))
    assert_error(r, 403, "ObjectLocked")
    assert "never shortened" in r.json()["error"]
    r = await lock(client, file_id, retain_until=iso(in_days(60)))
    assert r.status_code == 200
    assert datetime.fromisoformat(r.json()["retain_until"]) > far
    for bad in (in_days(-1), in_days(365 * 101)):
        assert_error(await lock(client, file_id, retain_until=iso(bad)), 400, "InvalidArgument")
    r = await lock(client, file_id, retain_until="2030-01-01T00:00:00")
    assert_error(r, 400, "InvalidArgument")
    assert_error(await lock(client, file_id, retain=True), 400, "InvalidArgument")
    assert_error(await lock(client, "f" * 32, legal_hold=True), 404, "NoSuchVersion")


async def test_who_may_lock(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    file_id = await upload(client, "who/x.ckpt", b"x")
    reader = bearer(await new_token(client, scopes=["read"], buckets=[BUCKET]))
    writer = bearer(await new_token(client, scopes=["read", "write"], buckets=[BUCKET]))
    url = f"/api/v1/files/{file_id}/retention"
    assert (await anon.get(url, headers=reader)).json()["locked"] is False
    r = await anon.put(url, json={"legal_hold": True}, headers=reader)
    assert_error(r, 403, "AccessDenied")
    r = await anon.put(url, json={"legal_hold": True}, headers=writer)
    assert r.status_code == 200 and r.json()["legal_hold"] is True
    audit = (await client.get("/api/v1/audit", params={"bucket": BUCKET})).json()["entries"]
    assert any(e["action"] == "retention" and e["file_id"] == file_id for e in audit)


async def test_only_an_admin_releases_a_legal_hold(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    # Otherwise any token that may write and delete would lift the hold, then delete.
    file_id = await upload(client, "hold/x.ckpt", b"x")
    user = bearer(await new_token(client, scopes=["read", "write", "delete"], buckets=[BUCKET]))
    url = f"/api/v1/files/{file_id}/retention"
    r = await anon.put(url, json={"legal_hold": True}, headers=user)
    assert r.status_code == 200 and r.json()["legal_hold"] is True
    assert_error(await anon.put(url, json={"legal_hold": False}, headers=user), 403, "AccessDenied")
    assert_error(await anon.delete(f"/api/v1/files/{file_id}", headers=user), 403, "ObjectLocked")
    assert (await anon.get(url, headers=user)).json()["legal_hold"] is True
    # Setting it again, or extending a date, stays a writer's right.
    assert (await anon.put(url, json={"legal_hold": True}, headers=user)).status_code == 200
    r = await client.put(url, json={"legal_hold": False})  # the admin
    assert r.status_code == 200 and r.json()["locked"] is False
