"""`tfstorage lifecycle run|get|set|clear`: a bucket's lifecycle rules and runs (admin)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from tfstorage.cli.output import CONNECTION, emit_json, fail, run
from tfstorage.client._http import Http
from tfstorage.client.config import resolve_config

app = typer.Typer(help="Lifecycle rules and runs (needs an admin token).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="print JSON")


async def _call(method: str, path: str, **kwargs: Any) -> Any:
    config = resolve_config(CONNECTION["url"], CONNECTION["token"])
    http = Http(config.url, config.token, timeout=300.0, retries=0)
    try:
        return await http.json(method, path, **kwargs)
    finally:
        await http.aclose()


@app.command("run")
def run_lifecycle(
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would go, change nothing"),
    bucket: str | None = typer.Option(None, "--bucket", help="only this bucket"),
    as_json: bool = JSON,
) -> None:
    """Run the lifecycle rules now: every bucket, or one."""
    params: dict[str, Any] = {"dry_run": dry_run}
    if bucket:
        params["bucket"] = bucket
    report = run(lambda: _call("POST", "/api/v1/lifecycle/run", params=params))
    if as_json:
        emit_json(report)
        return
    verb = "would remove" if dry_run else "removed"
    for action in report["actions"]:
        typer.echo(f"{action['bucket']}/{action['key']}\t{action['rule']}\t{action['reason']}")
    typer.echo(
        f"{verb} {report['count']} ({report['bytes']} bytes), skipped {report['skipped']}, "
        f"status {report['status']}"
    )
    if report["status"] == "busy":
        raise fail("another instance is running lifecycle; try again later")


@app.command("get")
def get_rules(bucket: str = typer.Argument(..., help="bucket name")) -> None:
    """Print the bucket's rules as JSON (the input of `set`)."""
    body = run(lambda: _call("GET", f"/api/v1/buckets/{bucket}/lifecycle"))
    typer.echo(json.dumps(body["rules"], indent=2))


@app.command("set")
def set_rules(
    bucket: str = typer.Argument(..., help="bucket name"),
    file: Path | None = typer.Argument(None, help="a JSON file of rules (default: stdin)"),
) -> None:
    """Replace the bucket's rules with a JSON list read from FILE or stdin."""
    text = file.read_text() if file is not None else sys.stdin.read()
    try:
        rules = json.loads(text)
    except ValueError as exc:
        raise fail(f"the rules are not valid JSON: {exc}", 2) from None
    body = run(lambda: _call("PUT", f"/api/v1/buckets/{bucket}/lifecycle", json=rules))
    typer.echo(f"{bucket}: {len(body['rules'])} rule(s) set")


@app.command("clear")
def clear_rules(bucket: str = typer.Argument(..., help="bucket name")) -> None:
    """Remove the bucket's rules (the default retention rule stays)."""
    run(lambda: _call("DELETE", f"/api/v1/buckets/{bucket}/lifecycle"))
    typer.echo(f"{bucket}: rules removed")
