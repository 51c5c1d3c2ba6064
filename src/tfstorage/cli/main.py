"""`tfstorage`: run the service, and move and inspect data on a server.

Remote locations are written `tfs://bucket/key`. The server and token come from
`--url`/`--token`, `TFSTORAGE_URL`/`TFSTORAGE_TOKEN`, the config file or a local
server's `DATA_DIR/admin.token` (see `tfstorage.client.config`). Exit codes: 0 ok,
1 error, 2 usage.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

import typer

from tfstorage.cli import buckets, counters, lifecycle, objects, output, tokens, transfer
from tfstorage.config import Settings, load_settings
from tfstorage.errors import ConfigError

app = typer.Typer(help="TensorFleet Storage", no_args_is_help=True, add_completion=False)
app.add_typer(tokens.app, name="token")
app.add_typer(lifecycle.app, name="lifecycle")
app.add_typer(counters.app, name="counters")
COMMANDS = (
    transfer.cp,
    transfer.sync,
    objects.ls,
    objects.stat,
    objects.rm,
    objects.du,
    objects.presign,
    objects.verify,
    buckets.mb,
    buckets.rb,
    buckets.stats,
)
for command in COMMANDS:
    app.command()(command)


@app.callback()
def connection(
    url: str | None = typer.Option(None, "--url", help="server URL (default: TFSTORAGE_URL)"),
    token: str | None = typer.Option(
        None, "--token", help="API token (default: TFSTORAGE_TOKEN)", show_default=False
    ),
) -> None:
    """TensorFleet Storage: `tfstorage serve`, and cp/sync/ls/rm/... against a server."""
    output.CONNECTION.update(url=url, token=token)


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
    s3_port: int | None = typer.Option(None, help="S3 endpoint port, 0: off (default: S3_PORT)"),
) -> None:
    """Run the storage service (configured by environment variables): the REST API on
    PORT and the S3 endpoint on S3_PORT, in one process or WORKERS processes."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from tfstorage.api.header_deadline import protocol_for
    from tfstorage.api.worker_balance import WORKER_LOAD_DIR_ENV
    from tfstorage.server import bind, create_server_app

    settings = _settings_or_exit()
    if host is not None:
        settings.host = host
    if port is not None:
        settings.port = port
    if s3_port is not None:
        settings.s3_port = s3_port
        os.environ["S3_PORT"] = str(s3_port)  # the workers read their settings from the env
    from tfstorage.logs import configure_logging, logging_config
    from tfstorage.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    configure_logging(settings)  # LOG_FORMAT=text|json, for this process and the workers
    try:
        app_ = create_server_app(settings)  # also validates STORAGE_TYPE and friends up front
    except ConfigError as exc:
        typer.echo(f"tfstorage: {exc}", err=True)
        raise typer.Exit(2) from None
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        # Slow clients cannot hold a connection forever between requests (uvicorn closes
        # one idle this long after its last response) ...
        "timeout_keep_alive": 30,
        # ... nor while sending headers: uvicorn's parser with HEADER_TIMEOUT_SECONDS.
        "http": protocol_for(settings.http_implementation),
        "access_log": False,  # the service logs each request itself
        # The app reads Forwarded / X-Forwarded-* itself (api/forwarded.py): uvicorn's
        # would rewrite the client first and hide the proxy whose trust decides.
        "proxy_headers": False,
        "log_config": logging_config(settings),
    }
    ports = [settings.port] + ([settings.s3_port] if settings.s3_port else [])
    try:
        # Both ports are bound here and served by every worker; the app tells them apart.
        # Several workers each listen on their own socket (server.bind says why).
        sockets = [bind(settings.host, p, per_worker=settings.workers > 1) for p in ports]
    except OSError as exc:
        typer.echo(f"tfstorage: cannot listen on {settings.host} ports {ports}: {exc}", err=True)
        raise typer.Exit(1) from None
    if settings.s3_port:
        logging.getLogger("tfstorage").info(
            "S3 endpoint on http://%s:%d (region %s)",
            settings.host,
            settings.s3_port,
            settings.s3_region,
        )
    if settings.workers > 1 or os.environ.get(MULTIPROC_ENV):
        # Workers share their Prometheus metrics through files in a fresh directory.
        metrics_dir, made_here = prepare_multiprocess_dir()
    if settings.workers > 1:
        # Each worker process builds its own app from the same environment.
        config = uvicorn.Config(
            "tfstorage.server:app_from_environment",
            factory=True,
            workers=settings.workers,
            # The supervisor kills a worker that misses a 5 s ping (uvicorn's
            # default); a worker busy hashing and fsyncing large uploads on a loaded
            # machine can, and killing it cuts every transfer it serves.
            timeout_worker_healthcheck=30,
            **options,  # type: ignore[arg-type]
        )
        # The workers' connection counts, for keeping them even (api/worker_balance.py).
        load_dir = tempfile.mkdtemp(prefix="tfstorage-workers-")
        try:
            os.environ[WORKER_LOAD_DIR_ENV] = load_dir  # inherited by the workers
            Multiprocess(config, sockets=sockets).run()
        finally:
            shutil.rmtree(load_dir, ignore_errors=True)
            if made_here:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        server = uvicorn.Server(uvicorn.Config(app_, **options))  # type: ignore[arg-type]
        server.run(sockets=sockets)
        if not server.started:
            sys.exit(3)  # what uvicorn.run exits with when start-up fails


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
