"""/docs works offline: the page and every asset it references come from the app, and
the OpenAPI document declares the bearer scheme that gives it an Authorize button."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN, make_settings
from tfstorage.api.app import create_app

pytestmark = pytest.mark.anyio

_CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


@pytest.fixture
async def anon(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def _references(page: str) -> list[str]:
    urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", page)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", page)  # SwaggerUIBundle({url: ...})
    return urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_reference_only_assets_served_by_the_app(
    anon: httpx.AsyncClient, page: str
) -> None:
    r = await anon.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    references = _references(r.text)
    assert any(url.endswith(".js") for url in references), references
    assert "/openapi.json" in references
    for url in references:
        assert url.startswith("/"), f"{page} loads {url} from another host"
        asset = await anon.get(url)
        assert asset.status_code == 200, url
        suffix = Path(url).suffix
        if suffix in _CONTENT_TYPES:
            assert asset.headers["content-type"].split(";")[0] in _CONTENT_TYPES[suffix], url
            assert len(asset.content) > 1000, url  # the real bundle, not a stub
    assert "cdn" not in r.text.lower()


async def test_docs_reference_the_bundles_by_path(anon: httpx.AsyncClient) -> None:
    page = (await anon.get("/docs")).text
    assert "/docs/assets/swagger-ui-bundle.js" in page
    assert "/docs/assets/swagger-ui.css" in page
    bundle = await anon.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    # Nothing outside the asset directory is reachable through the mount.
    assert (await anon.get("/docs/assets/../../pyproject.toml")).status_code == 404


async def test_openapi_declares_the_bearer_scheme_on_every_operation(
    anon: httpx.AsyncClient,
) -> None:
    document = (await anon.get("/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    operations = [
        (path, method, operation)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) >= 40
    for path, method, operation in operations:
        assert {"bearer": []} in operation.get("security", []), (method, path)


async def test_the_declared_scheme_is_the_header_the_api_accepts(
    anon: httpx.AsyncClient,
) -> None:
    # What Swagger UI sends after "Authorize": Authorization: Bearer <the token>.
    assert (await anon.get("/api/v1/buckets")).status_code == 401
    r = await anon.get("/api/v1/buckets", headers=ADMIN)
    assert r.status_code == 200, r.text
