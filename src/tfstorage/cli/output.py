"""How commands talk to the user: progress bars on a terminal, plain or `--json`
output on stdout, errors on stderr with the exit code (0 ok, 1 error, 2 usage)."""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tfstorage.cli.messages import describe
from tfstorage.client import AsyncClient
from tfstorage.client.errors import ConfigurationError, TFStorageError

T = TypeVar("T")

# Set by the `tfstorage` callback from --url / --token.
CONNECTION: dict[str, str | None] = {"url": None, "token": None}


def client(**kwargs: Any) -> AsyncClient:
    return AsyncClient(CONNECTION["url"], CONNECTION["token"], **kwargs)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"tfstorage: {message}", err=True)
    return typer.Exit(code)


def run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a command's coroutine; SDK errors become a message on stderr and exit 1."""
    try:
        return anyio.run(fn)
    except ConfigurationError as exc:
        raise fail(exc.message, 2) from None
    except TFStorageError as exc:
        raise fail(describe(exc, CONNECTION["url"], CONNECTION["token"])) from None
    except OSError as exc:
        raise fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=None, sort_keys=False))


def interactive(quiet: bool, as_json: bool) -> bool:
    """Progress bars only for a person watching: stdout is a terminal, no -q, no --json."""
    return not quiet and not as_json and sys.stdout.isatty()


class Bar:
    """One progress bar of bytes (with rate and ETA); a no-op when not shown."""

    def __init__(self, progress: Progress | None, description: str, total: int | None) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self.description = description
        self.files_done = 0
        self.files_total = 0
        if progress is not None:
            self._task = progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def plan(self, files: int, total: int) -> None:
        self.files_total = files
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total, description=self._files_text())

    def file_done(self, _key: str) -> None:
        self.files_done += 1
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=self._files_text())

    def _files_text(self) -> str:
        return f"{self.description} {self.files_done}/{self.files_total} files"


@contextmanager
def transfer_bar(show: bool, description: str, total: int | None) -> Iterator[Bar]:
    if not show:
        yield Bar(None, description, total)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=False),
        transient=False,
        refresh_per_second=8,
    )
    with progress:
        yield Bar(progress, description, total)
