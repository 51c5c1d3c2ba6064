"""S3 key pairs of tokens: issued once, derived (never stored), gone with their token.

The derivation key is not in the index: a copy of the index database alone (a leaked
dump) must not yield a working secret. The restart cases (another key refuses old key
pairs, the same key file accepts them) are in tests/s3api/test_endpoint_server.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import shutil
import sqlite3
import stat
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import make_settings
from tfstorage.config import Settings, load_settings
from tfstorage.errors import ConfigError
from tfstorage.service.s3keys import KEY_FILE

pytestmark = pytest.mark.anyio
SHARED_KEY = "one-key-for-every-instance-of-this-deployment"


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
    keys = app.state.storage.access.s3
    found = keys.lookup(key_id)
    assert found is not None and found[1] == secret and found[0].id == body["id"]
    assert (await client.delete(f"/api/v1/tokens/{body['id']}")).status_code == 200
    assert keys.lookup(key_id) is None  # revoked: the key is dead too
    assert keys.lookup("TFSKNOTAKEY000000000") is None


def _derived(key: bytes, key_id: str) -> str:
    mac = hmac.new(key, key_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def _candidate_keys(value: str) -> list[bytes]:
    """Every way a stored value could serve as an HMAC key."""
    keys = [value.encode()]
    with contextlib.suppress(ValueError):
        keys.append(bytes.fromhex(value))
    return keys


async def test_a_copy_of_the_index_alone_does_not_yield_the_secret(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    made = await client.post("/api/v1/tokens", json={"name": "s3", "scopes": ["read"], "s3": True})
    assert made.status_code == 201, made.text
    key_id, secret = made.json()["access_key_id"], made.json()["secret_access_key"]
    # The bootstrap's admin.s3 pair too: the one a leaked dump would be used against.
    admin = dict(
        line.split(" = ", 1)
        for line in (settings.data_dir / "admin.s3").read_text().splitlines()
        if " = " in line
    )
    pairs = [(key_id, secret), (admin["aws_access_key_id"], admin["aws_secret_access_key"])]
    dump = tmp_path / "leaked"
    dump.mkdir()
    for path in settings.data_dir.glob("index.db*"):  # the WAL too
        shutil.copy(path, dump / path.name)
    raw = b"".join(p.read_bytes() for p in dump.iterdir())
    with sqlite3.connect(dump / "index.db") as db:
        stored = [value for (value,) in db.execute("SELECT value FROM server_secrets")]
    assert stored, "the presigned-URL key is still in the index; the check must see it"
    for pair_id, pair_secret in pairs:
        assert pair_id.encode() in raw and pair_secret.encode() not in raw
        for value in stored:
            for key in _candidate_keys(value):
                assert _derived(key, pair_id) != pair_secret
    # What does derive it: the key file outside the index, private to the service user.
    key_file = settings.data_dir / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for pair_id, pair_secret in pairs:
        assert _derived(key_file.read_text().strip().encode(), pair_id) == pair_secret


async def test_s3_secret_key_setting_replaces_the_key_file(tmp_path: Path) -> None:
    from tfstorage.api.app import create_app

    configured = make_settings(tmp_path, s3_secret_key=SHARED_KEY)
    assert SHARED_KEY not in repr(configured)  # never logged
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            made = await http.post(
                "/api/v1/tokens",
                json={"name": "s3", "scopes": ["read"], "s3": True},
                headers={"Authorization": f"Bearer {configured.admin_token}"},
            )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["secret_access_key"] == _derived(SHARED_KEY.encode(), body["access_key_id"])
    assert not (configured.data_dir / KEY_FILE).exists()


def test_a_short_s3_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="S3_SECRET_KEY"):
        load_settings(s3_secret_key="short")
    assert load_settings(s3_secret_key="").s3_secret_key.get_secret_value() == ""


async def test_s3_must_be_a_boolean(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tokens", json={"name": "x", "scopes": ["read"], "s3": "maybe"})
    assert r.status_code == 400 or r.status_code == 422
