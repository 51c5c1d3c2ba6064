"""S3 key pairs of tokens: issued once, derived (never stored), gone with their token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import make_settings
from tfstorage.config import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:  # local disk only: nothing here touches blobs
    return make_settings(tmp_path)


async def test_a_token_with_s3_gets_a_key_pair_shown_once(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    plain = await client.post("/api/v1/tokens", json={"name": "rest", "scopes": ["read"]})
    assert plain.status_code == 201
    assert "access_key_id" not in plain.json() and "secret_access_key" not in plain.json()
    made = await client.post(
        "/api/v1/tokens", json={"name": "s3", "scopes": ["read"], "buckets": ["models"], "s3": True}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    key_id, secret = body["access_key_id"], body["secret_access_key"]
    assert key_id.startswith("TFSK") and len(key_id) == 20 and len(secret) >= 40
    listed = (await client.get("/api/v1/tokens")).text
    assert secret not in listed
    # The index keeps the key id, never the secret.
    index = b"".join(p.read_bytes() for p in settings.data_dir.glob("index.db*"))  # WAL too
    assert key_id.encode() in index and secret.encode() not in index
    keys = app.state.storage.access.s3
    found = keys.lookup(key_id)
    assert found is not None and found[1] == secret and found[0].id == body["id"]
    assert (await client.delete(f"/api/v1/tokens/{body['id']}")).status_code == 200
    assert keys.lookup(key_id) is None  # revoked: the key is dead too
    assert keys.lookup("TFSKNOTAKEY000000000") is None


async def test_s3_must_be_a_boolean(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tokens", json={"name": "x", "scopes": ["read"], "s3": "maybe"})
    assert r.status_code == 400 or r.status_code == 422
