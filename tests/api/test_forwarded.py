"""Links for clients behind a reverse proxy (PUBLIC_URL, trusted Forwarded / X-Forwarded-*)
and the presigned-URL key's rotation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ADMIN, assert_error, make_settings
from tfstorage.api.app import create_app
from tfstorage.config import load_settings
from tfstorage.errors import ConfigError

pytestmark = pytest.mark.anyio

PRESIGN = {"method": "GET", "bucket": "datasets", "key": "shared/a.csv", "expires_in": 600}
ClientFactory = Callable[..., httpx.AsyncClient]


@asynccontextmanager
async def running(tmp_path: Path, **overrides: object) -> AsyncIterator[ClientFactory]:
    """The app, and clients that reach it from a given peer address."""
    app: FastAPI = create_app(make_settings(tmp_path, **overrides))
    async with app.router.lifespan_context(app):

        def client(peer: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(peer, 4711))
            kwargs.setdefault("headers", ADMIN)
            return httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3:8083", **kwargs)

        async with client() as c:
            assert (await c.put("/api/v1/objects/datasets/shared/a.csv", content=b"1,2")).is_success
        yield client


async def presigned_url(c: httpx.AsyncClient, **headers: str) -> str:
    r = await c.post("/api/v1/presign", json=PRESIGN, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["url"])


async def last_audit_client(c: httpx.AsyncClient) -> str:
    entries = (await c.get("/api/v1/audit", params={"limit": 1000})).json()["entries"]
    return str(entries[-1]["client"])


async def test_trusted_proxy_headers_make_the_link(tmp_path: Path) -> None:
    async with running(tmp_path) as client, client() as c:
        assert (await presigned_url(c)).startswith("http://10.1.2.3:8083/api/v1/download/")
        url = await presigned_url(
            c,
            **{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "storage.example.com",
               "X-Forwarded-For": "203.0.113.9"},
        )  # fmt: skip
        assert url.startswith("https://storage.example.com/api/v1/download/datasets/shared/a.csv?")
        assert await last_audit_client(c) == "203.0.113.9"
        # A client's own `Forwarded`, passed through by a proxy that sets X-Forwarded-*,
        # is not read: only the family FORWARDED_HEADERS names is.
        url = await presigned_url(
            c,
            Forwarded="for=6.6.6.6;host=evil.example;proto=https",
            **{"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "storage.example.com"},
        )
        assert url.startswith("http://storage.example.com/api/v1/download/")
        assert await last_audit_client(c) == "203.0.113.7"
        # Garbage is ignored, not turned into a link.
        url = await presigned_url(c, **{"X-Forwarded-Host": "a b/c", "X-Forwarded-Proto": "ftp"})
        assert url.startswith("http://10.1.2.3:8083/")


async def test_rfc_7239_forwarded_when_the_proxy_speaks_it(tmp_path: Path) -> None:
    async with running(tmp_path, forwarded_headers="forwarded") as client, client() as c:
        # RFC 7239: the last element is the one the proxy next to us added.
        url = await presigned_url(
            c,
            Forwarded='for=198.51.100.1;host=evil.example, for="[2001:db8::7]:443";'
            'proto=https;host="lb.example:8443"',
            **{"X-Forwarded-Host": "phish.example", "X-Forwarded-For": "6.6.6.6"},
        )
        assert url.startswith("https://lb.example:8443/api/v1/download/")
        assert await last_audit_client(c) == "2001:db8::7"


async def test_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    async with running(tmp_path) as client, client("192.0.2.50") as c:
        url = await presigned_url(
            c, **{"X-Forwarded-Host": "phish.example", "X-Forwarded-For": "203.0.113.9"}
        )
        assert urlsplit(url).netloc == "10.1.2.3:8083"
        assert await last_audit_client(c) == "192.0.2.50"


async def test_a_configured_proxy_network_is_trusted(tmp_path: Path) -> None:
    async with running(tmp_path, forwarded_allow_ips="192.0.2.0/24") as client:
        async with client("192.0.2.50") as c:
            url = await presigned_url(c, **{"X-Forwarded-Host": "lb.example"})
            assert urlsplit(url).netloc == "lb.example"
        async with client("127.0.0.1") as c:  # no longer trusted: not in the list
            url = await presigned_url(c, **{"X-Forwarded-Host": "lb.example"})
            assert urlsplit(url).netloc == "10.1.2.3:8083"


async def test_public_url_wins_and_its_links_work(tmp_path: Path) -> None:
    public = "https://storage.example.com/tfs"
    async with running(tmp_path, public_url=public + "/") as client, client() as c:
        url = await presigned_url(c, **{"X-Forwarded-Host": "lb.example"})
        assert url.startswith(public + "/api/v1/download/datasets/shared/a.csv?")
        # The path below the prefix is what a proxy mounted there passes on.
        async with client(headers={}) as anon:
            got = await anon.get(url.removeprefix(public))
            assert got.status_code == 200 and got.content == b"1,2"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PUBLIC_URL", "storage.example.com"),
        ("PUBLIC_URL", "https://storage.example.com/?x=1"),
        ("FORWARDED_ALLOW_IPS", "127.0.0.1,proxy.local"),
    ],
)
def test_bad_settings_are_refused(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"invalid {variable}"):
        load_settings()


async def test_rotating_the_signing_key_kills_earlier_links(tmp_path: Path) -> None:
    async with running(tmp_path) as client, client() as c, client(headers={}) as anon:
        old = await presigned_url(c)
        assert (await anon.get(old)).status_code == 200
        reader = (
            await c.post("/api/v1/tokens", json={"name": "r", "scopes": ["read"], "buckets": ["*"]})
        ).json()["token"]
        r = await anon.post(
            "/api/v1/presign/rotate-key", headers={"Authorization": f"Bearer {reader}"}
        )
        assert_error(r, 403, "AccessDenied")
        assert (await anon.get(old)).status_code == 200  # nothing rotated

        r = await c.post("/api/v1/presign/rotate-key")
        assert r.status_code == 200 and r.json() == {"rotated": True}
        assert_error(await anon.get(old), 403, "AccessDenied")
        new = await presigned_url(c)
        assert new != old and (await anon.get(new)).status_code == 200
        assert [e["action"] for e in (await c.get("/api/v1/audit")).json()["entries"]].count(
            "rotate_presign_key"
        ) == 1
