"""How the CLI reaches a server: TFSTORAGE_URL and a token from TFSTORAGE_TOKEN or,
for a local server, the admin token its first start wrote into DATA_DIR."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8083"


def server_url() -> str:
    return os.environ.get("TFSTORAGE_URL", DEFAULT_URL).rstrip("/")


def token() -> str | None:
    if value := os.environ.get("TFSTORAGE_TOKEN"):
        return value
    path = Path(os.environ.get("DATA_DIR", "./data")) / "admin.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def client() -> httpx.Client:
    headers = {"Authorization": f"Bearer {secret}"} if (secret := token()) else {}
    return httpx.Client(base_url=server_url(), headers=headers, timeout=30.0)


def call(method: str, path: str, **kwargs: Any) -> Any:
    """One request; a server error is printed as the server said it, and exits 1."""
    try:
        with client() as c:
            response = c.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"tfstorage: cannot reach {server_url()}: {exc}", err=True)
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{body.get('code', response.status_code)}: {body.get('error', '')}"
        except ValueError:
            message = f"HTTP {response.status_code}"
        typer.echo(f"tfstorage: {message}", err=True)
        raise typer.Exit(1)
    return response.json()
