"""How the older commands (`token`, `replicate`) reach a server: one JSON request with
the SDK's configuration (`tfstorage.client.config`: --url/--token, TFSTORAGE_URL /
TFSTORAGE_TOKEN, the config file, or a local server's DATA_DIR/admin.token)."""

from __future__ import annotations

from typing import Any

import httpx
import typer

from tfstorage.cli.messages import describe
from tfstorage.cli.output import CONNECTION
from tfstorage.client.config import resolve_config
from tfstorage.client.errors import ConfigurationError, error_from_response


def client() -> httpx.Client:
    try:
        config = resolve_config(CONNECTION["url"], CONNECTION["token"])
    except ConfigurationError as exc:
        typer.echo(f"tfstorage: {exc.message}", err=True)
        raise typer.Exit(2) from None
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    return httpx.Client(base_url=config.url, headers=headers, timeout=30.0)


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One request; a server error is printed as the server said it, and exits 1."""
    with client() as c:
        try:
            response = c.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            typer.echo(f"tfstorage: cannot reach {c.base_url}: {exc}", err=True)
            raise typer.Exit(1) from None
    if response.status_code >= 400:
        error = error_from_response(response)
        message = describe(error, CONNECTION["url"], CONNECTION["token"])
        typer.echo(f"tfstorage: {message}", err=True)
        raise typer.Exit(1)
    return response.json()
