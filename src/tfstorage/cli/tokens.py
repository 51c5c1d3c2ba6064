"""`tfstorage token create|list|revoke|rotate-presign-key`."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from tfstorage.cli.remote import call

app = typer.Typer(
    help="Manage API tokens and the presigned-URL key (needs an admin token).",
    no_args_is_help=True,
)


@app.command()
def create(
    name: str = typer.Option(..., help="what the token is for"),
    scope: list[str] = typer.Option(["read"], help="read, write, delete, admin (repeat)"),
    bucket: list[str] = typer.Option(["*"], help="bucket pattern: models, ckpt-*, * (repeat)"),
    prefix: str = typer.Option("", help="keys must start with this"),
    expires_in: int | None = typer.Option(None, help="seconds until it expires"),
    s3: bool = typer.Option(False, "--s3", help="also an S3 access key pair (same rights)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Create a token; its secret is printed once and never again."""
    body: dict[str, object] = {"name": name, "scopes": scope, "buckets": bucket, "prefix": prefix}
    if s3:
        body["s3"] = True
    if expires_in is not None:
        body["expires_in"] = expires_in
    created = call("POST", "/api/v1/tokens", json=body)
    if as_json:
        typer.echo(json.dumps(created))
        return
    typer.echo(created["token"])
    if s3:
        typer.echo(f"aws_access_key_id = {created['access_key_id']}")
        typer.echo(f"aws_secret_access_key = {created['secret_access_key']}")
    typer.echo(f"(id {created['id']}; store the token now: it is not shown again)", err=True)


@app.command("list")
def list_tokens(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List tokens (never their secrets)."""
    tokens = call("GET", "/api/v1/tokens")["tokens"]
    if as_json:
        typer.echo(json.dumps(tokens))
        return
    table = Table("id", "name", "scopes", "buckets", "prefix", "expires", "last used", "revoked")
    for t in tokens:
        table.add_row(
            t["id"], t["name"], ",".join(t["scopes"]), ",".join(t["buckets"]), t["prefix"],
            t["expires_at"] or "-", t["last_used_at"] or "-", "yes" if t["revoked"] else "",
        )  # fmt: skip
    Console().print(table)


@app.command()
def revoke(token_id: str) -> None:
    """Revoke a token: it and every URL it presigned stop working."""
    call("DELETE", f"/api/v1/tokens/{token_id}")
    typer.echo(f"revoked {token_id}")


@app.command("rotate-presign-key")
def rotate_presign_key(
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
) -> None:
    """Replace the key presigned URLs are signed with: every link issued so far stops
    working (on every instance within a few seconds). Tokens are not affected."""
    if not yes:
        typer.confirm("Every presigned URL issued so far will stop working. Go on?", abort=True)
    call("POST", "/api/v1/presign/rotate-key")
    typer.echo("rotated the presigned-URL signing key: earlier links no longer work")
