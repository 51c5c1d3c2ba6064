"""`tfstorage counters check|repair`: the usage counters against a recomputation (admin)."""

from __future__ import annotations

from typing import Any

import typer

from tfstorage.cli.output import CONNECTION, emit_json, run
from tfstorage.client._http import Http
from tfstorage.client.config import resolve_config

app = typer.Typer(help="Usage counters: check or rebuild (needs an admin token).")
JSON = typer.Option(False, "--json", help="print JSON")


async def _call(method: str, path: str) -> Any:
    config = resolve_config(CONNECTION["url"], CONNECTION["token"])
    # A check or repair scans every version: minutes at tens of millions.
    http = Http(config.url, config.token, timeout=3600.0, retries=0)
    try:
        return await http.json(method, path)
    finally:
        await http.aclose()


def _show(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(report)
        return
    for diff in report["differences"]:
        if diff.get("blobs"):
            where = "blobs"
        else:  # a bucket's category, or a bucket's owner
            where = f"{diff['bucket']}\t{diff.get('category') or 'owner ' + diff['owner']}"
        wrong = {k: v for k, v in diff["counted"].items() if diff["actual"].get(k) != v}
        right = {k: diff["actual"][k] for k in wrong}
        typer.echo(f"{where}\tcounted {wrong}\tactual {right}")
    state = "ok" if report["ok"] else f"{len(report['differences'])} difference(s)"
    if report["repaired"]:
        state += ", rebuilt"
    typer.echo(f"{state} ({report['buckets']} buckets, {report['seconds']} s)")


@app.command("check")
def check(as_json: bool = JSON) -> None:
    """Recompute the counters from scratch and compare; exit 1 when they differ."""
    report = run(lambda: _call("GET", "/api/v1/storage/counters"))
    _show(report, as_json)
    if not report["ok"]:
        raise typer.Exit(1)


@app.command("repair")
def repair(as_json: bool = JSON) -> None:
    """Rebuild the counters from a recomputation (safe while writes go on)."""
    _show(run(lambda: _call("POST", "/api/v1/storage/counters/repair")), as_json)
