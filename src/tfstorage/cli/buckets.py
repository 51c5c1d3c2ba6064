"""`tfstorage mb|rb|stats`: buckets and the server's statistics."""

from __future__ import annotations

from typing import Any

import typer

from tfstorage.cli.output import client, emit_json, run
from tfstorage.cli.paths import SCHEME, parse_remote
from tfstorage.client.errors import BucketNotEmpty
from tfstorage.domain.sizes import format_size

JSON = typer.Option(False, "--json", help="print JSON")


def _bucket(text: str) -> str:
    return parse_remote(text).bucket if text.startswith(SCHEME) else text


def mb(
    bucket: str = typer.Argument(..., help="tfs://bucket or a bucket name"),
    versioning: bool = typer.Option(True, help="keep previous versions"),
    public_read: bool = typer.Option(False, help="anyone may download and list"),
    quota_bytes: int | None = typer.Option(None, help="most bytes it may hold"),
    description: str = typer.Option("", help="what it is for"),
    as_json: bool = JSON,
) -> None:
    """Make a bucket (needs an admin token)."""
    name = _bucket(bucket)
    settings: dict[str, Any] = {"versioning": versioning, "public_read": public_read}
    if quota_bytes is not None:
        settings["quota_bytes"] = quota_bytes
    if description:
        settings["description"] = description

    async def go() -> dict[str, Any]:
        async with client() as c:
            return await c.create_bucket(name, **settings)

    made = run(go)
    emit_json(made) if as_json else typer.echo(f"made bucket {name}")


def rb(
    bucket: str = typer.Argument(..., help="tfs://bucket or a bucket name"),
    force: bool = typer.Option(False, "--force", help="also when it holds objects"),
    as_json: bool = JSON,
) -> None:
    """Remove a bucket (needs an admin token; a non-empty one only with --force)."""
    name = _bucket(bucket)

    async def go() -> dict[str, Any]:
        async with client() as c:
            try:
                return await c.delete_bucket(name, force=force)
            except BucketNotEmpty as exc:
                # The server's message speaks HTTP (`?force=true`); say it as the CLI.
                raise BucketNotEmpty(
                    f"bucket {name!r} is not empty: `tfstorage rb --force {SCHEME}{name}` "
                    "removes it with everything in it",
                    status=exc.status,
                    code=exc.code,
                    request_id=exc.request_id,
                ) from None

    gone = run(go)
    emit_json(gone) if as_json else typer.echo(f"removed bucket {name}")


def stats(as_json: bool = JSON) -> None:
    """The server's totals, per bucket, space and deduplication (admin)."""

    async def go() -> dict[str, Any]:
        async with client() as c:
            return await c.stats()

    s = run(go)
    if as_json:
        emit_json(s)
        return
    typer.echo(f"{s['total_objects']} objects, {s['total_size']} in {s['total_buckets']} buckets")
    for name, b in s.get("buckets", {}).items():
        typer.echo(f"  {name:24} {b['objects']:>10} objects  {format_size(b['size_bytes']):>10}")
    dedup = s.get("dedup") or {}
    if dedup:
        typer.echo(f"deduplication saved {dedup.get('saved', '0 B')}")
