"""`tfstorage cp` and `tfstorage sync`: files and directories, local <-> remote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tfstorage.cli.output import client, emit_json, fail, interactive, run, transfer_bar
from tfstorage.cli.paths import RemotePath, is_remote, parse_remote
from tfstorage.client.models import TransferReport
from tfstorage.domain.sizes import parse_size

QUIET = typer.Option(False, "-q", "--quiet", help="no progress bar")
JSON = typer.Option(False, "--json", help="print the result as JSON")
PART_SIZE = typer.Option("16MiB", "--part-size", help="multipart part size")
CONCURRENCY = typer.Option(4, "--concurrency", "-j", min=1, max=64, help="transfers in flight")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _report(src: str, dst: str, report: TransferReport, as_json: bool, verb: str) -> None:
    if as_json:
        emit_json({"source": src, "destination": dst, **report.to_json()})
    else:
        typer.echo(
            f"{verb} {len(report.transferred)} files ({report.bytes:,} bytes), "
            f"skipped {len(report.skipped)} unchanged, {len(report.failed)} failed"
        )
    for key, reason in sorted(report.failed.items()):
        typer.echo(f"tfstorage: {key}: {reason}", err=True)
    if report.failed:
        raise typer.Exit(1)


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise typer.BadParameter("--metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("--metadata must be a JSON object")
    return value


def _tags(values: list[str]) -> dict[str, str] | None:
    tags = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"--tag wants key=value, got {item!r}")
        tags[k] = v
    return tags or None


def cp(
    src: str = typer.Argument(..., help="local path or tfs://bucket/key"),
    dst: str = typer.Argument(..., help="local path or tfs://bucket/key"),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="directories and prefixes"),
    content_type: str | None = typer.Option(None, help="Content-Type of an uploaded file"),
    metadata: str | None = typer.Option(None, help="JSON object stored with an upload"),
    tag: list[str] = typer.Option([], help="key=value tag of an upload (repeat)"),
    part_size: str = PART_SIZE,
    concurrency: int = CONCURRENCY,
    quiet: bool = QUIET,
    as_json: bool = JSON,
) -> None:
    """Copy a file or (-r) a directory to or from the server.

    Uploads of big files are multipart and resume after an interruption when run again;
    downloads resume too, and are verified by SHA-256 before the file appears."""
    show = interactive(quiet, as_json)
    opts = {"part_size": _size(part_size), "concurrency": concurrency}
    if is_remote(src) and is_remote(dst):
        _copy_remote(parse_remote(src), parse_remote(dst), recursive, as_json)
        return
    if not is_remote(src) and not is_remote(dst):
        raise fail("one of SRC and DST must be tfs://bucket/key", 2)
    if is_remote(dst):
        meta, tags = _metadata(metadata), _tags(tag)
        _upload(Path(src), parse_remote(dst), recursive, show, as_json, opts, skip=False,
                content_type=content_type, metadata=meta, tags=tags)  # fmt: skip
    else:
        _download(parse_remote(src), Path(dst), recursive, show, as_json, opts, skip=False)


def sync(
    src: str = typer.Argument(..., help="local directory or tfs://bucket/prefix"),
    dst: str = typer.Argument(..., help="local directory or tfs://bucket/prefix"),
    concurrency: int = CONCURRENCY,
    quiet: bool = QUIET,
    as_json: bool = JSON,
) -> None:
    """Make DST hold every file of SRC: sends only files whose SHA-256 differs."""
    show = interactive(quiet, as_json)
    opts = {"concurrency": concurrency}
    if is_remote(src) == is_remote(dst):
        raise fail("sync needs one local directory and one tfs://bucket/prefix", 2)
    if is_remote(dst):
        _upload(Path(src), parse_remote(dst), True, show, as_json, opts, skip=True)
    else:
        _download(parse_remote(src), Path(dst), True, show, as_json, opts, skip=True)


def _upload(
    src: Path,
    dst: RemotePath,
    recursive: bool,
    show: bool,
    as_json: bool,
    opts: dict[str, Any],
    *,
    skip: bool,
    content_type: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    if src.is_dir():
        if not recursive:
            raise fail(f"{src} is a directory (use -r)", 2)

        async def upload_tree() -> TransferReport:
            async with client(**opts) as c:
                with transfer_bar(show, "uploading", None) as bar:
                    return await c.upload_dir(
                        src, dst.bucket, dst.prefix, skip_existing=skip,
                        progress=bar.advance, on_file=bar.file_done, planned=bar.plan,
                    )  # fmt: skip

        _report(str(src), str(dst), run(upload_tree), as_json, "uploaded")
        return
    if not src.is_file():
        raise fail(f"{src}: no such file", 1)
    key = dst.key if dst.key and not dst.key.endswith("/") else dst.key + src.name

    async def upload_one() -> dict[str, Any]:
        async with client(**opts) as c:
            with transfer_bar(show, src.name, src.stat().st_size) as bar:
                info = await c.upload_file(
                    src, dst.bucket, key, content_type=content_type, metadata=metadata,
                    tags=tags, progress=bar.advance,
                )  # fmt: skip
        return info.to_json()

    info = run(upload_one)
    if as_json:
        emit_json({"source": str(src), "destination": f"tfs://{dst.bucket}/{key}", "object": info})
    else:
        typer.echo(f"uploaded {src} -> tfs://{dst.bucket}/{key} ({info['size']:,} bytes, "
                   f"sha256 {info['sha256']})")  # fmt: skip


def _download(
    src: RemotePath,
    dst: Path,
    recursive: bool,
    show: bool,
    as_json: bool,
    opts: dict[str, Any],
    *,
    skip: bool,
) -> None:
    if recursive:

        async def download_tree() -> TransferReport:
            async with client(**opts) as c:
                with transfer_bar(show, "downloading", None) as bar:
                    return await c.download_prefix(
                        src.bucket, src.prefix, dst, skip_existing=skip,
                        progress=bar.advance, on_file=bar.file_done, planned=bar.plan,
                    )  # fmt: skip

        _report(str(src), str(dst), run(download_tree), as_json, "downloaded")
        return
    if not src.key or src.key.endswith("/"):
        raise fail(f"{src} names a prefix (use -r)", 2)
    dest = dst / src.basename if dst.is_dir() or str(dst).endswith("/") else dst

    async def download_one() -> dict[str, Any]:
        async with client(**opts) as c:
            size = (await c.stat(src.bucket, src.key)).size
            with transfer_bar(show, src.basename, size) as bar:
                info = await c.download_file(src.bucket, src.key, dest, progress=bar.advance)
        return info.to_json()

    info = run(download_one)
    if as_json:
        emit_json({"source": str(src), "destination": str(dest), "object": info})
    else:
        typer.echo(f"downloaded {src} -> {dest} ({info['size']:,} bytes, sha256 verified)")


def _copy_remote(src: RemotePath, dst: RemotePath, recursive: bool, as_json: bool) -> None:
    """Server-side: the copies share the stored bytes, nothing travels."""
    if not recursive:
        raise fail("copying between remote locations works on prefixes (use -r)", 2)

    async def go() -> dict[str, Any]:
        async with client() as c:
            return await c.copy_prefix(src.bucket, src.prefix, dst.bucket, dst.prefix)

    result = run(go)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"copied {result.get('copied', 0)} keys from {src} to {dst} (server-side)")
    if result.get("failed"):
        raise typer.Exit(1)
