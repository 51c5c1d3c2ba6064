"""`tfstorage`: run the service (more commands arrive with the SDK)."""

from __future__ import annotations

import logging
import sys

import typer

from tfstorage.cli import tokens
from tfstorage.config import Settings, load_settings
from tfstorage.errors import ConfigError

app = typer.Typer(help="TensorFleet Storage", no_args_is_help=True, add_completion=False)
app.add_typer(tokens.app, name="token")


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        typer.echo(f"tfstorage: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, help="listen address (default: HOST)"),
    port: int | None = typer.Option(None, help="listen port (default: PORT)"),
) -> None:
    """Run the storage service (configured by environment variables)."""
    import uvicorn

    from tfstorage.api.app import create_app

    settings = _settings_or_exit()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app_ = create_app(settings)  # also validates STORAGE_TYPE and friends up front
    except ConfigError as exc:
        typer.echo(f"tfstorage: {exc}", err=True)
        raise typer.Exit(2) from None
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        # Slow clients cannot hold a connection forever between requests.
        "timeout_keep_alive": 30,
        "access_log": False,
    }
    if settings.workers > 1:
        # Each worker process builds its own app from the same environment.
        uvicorn.run(
            "tfstorage.api.app:app_from_environment",
            factory=True,
            workers=settings.workers,
            **options,  # type: ignore[arg-type]
        )
    else:
        uvicorn.run(app_, **options)  # type: ignore[arg-type]


@app.command()
def replicate(
    verify: bool = typer.Option(False, "--verify", help="compare every blob, not just the backlog"),
) -> None:
    """Bring the server's replica up to date (needs an admin token)."""
    import json

    from tfstorage.cli.remote import call

    typer.echo(json.dumps(call("POST", "/api/v1/storage/replicate", params={"verify": verify})))


@app.command()
def version() -> None:
    """Print the version."""
    from tfstorage import __version__

    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"tfstorage: {exc}", err=True)
        sys.exit(2)
