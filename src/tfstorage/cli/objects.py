"""`tfstorage ls|stat|rm|du|presign|verify`: looking at and removing remote objects."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tfstorage.cli.output import client, emit_json, fail, run
from tfstorage.cli.paths import parse_remote
from tfstorage.client.errors import NotFound
from tfstorage.domain.sizes import format_size

JSON = typer.Option(False, "--json", help="print JSON")


def ls(
    path: str | None = typer.Argument(None, help="tfs://bucket[/prefix]; none: the buckets"),
    long: bool = typer.Option(False, "-l", "--long", help="size, date, sha256"),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="every key, not by '/'"),
    versions: bool = typer.Option(False, "--versions", help="every version of a key"),
    as_json: bool = JSON,
) -> None:
    """List buckets, keys under a prefix, or (--versions) the versions of a key."""
    if path is None:
        buckets = run(_buckets)
        if as_json:
            emit_json({"buckets": buckets})
            return
        for b in buckets:
            line = b["name"]
            if long:
                line = f"{b['objects']:>10} {b['size_bytes']:>16,}  {b['creation_date']}  {line}"
            typer.echo(line)
        return
    remote = parse_remote(path)
    if versions:
        found = run(lambda: _versions(remote.bucket, remote.key))
        if as_json:
            emit_json({"bucket": remote.bucket, "key": remote.key, "versions": found})
            return
        for v in found:
            flags = ("latest " if v["is_latest"] else "") + ("deleted" if v["deleted"] else "")
            typer.echo(f"{v['file_id']}  {v['size']:>14,}  {v['last_modified']}  {flags.strip()}")
        return
    delimiter = "" if recursive else "/"
    prefix = remote.key
    listing = run(lambda: _list(remote.bucket, prefix, delimiter))
    if as_json:
        emit_json(listing)
        return
    for p in listing["common_prefixes"]:
        typer.echo(f"{'PRE':>44}  {p}" if long else p)
    for o in listing["objects"]:
        if long:
            typer.echo(
                f"{o['size']:>16,}  {o['last_modified'][:19]}  {o['sha256'][:16]}  {o['key']}"
            )
        else:
            typer.echo(o["key"])


async def _buckets() -> list[dict[str, Any]]:
    async with client() as c:
        return await c.list_buckets()


async def _versions(bucket: str, key: str) -> list[dict[str, Any]]:
    async with client() as c:
        return [v.to_json() for v in await c.versions(bucket, key)]


async def _list(bucket: str, prefix: str, delimiter: str) -> dict[str, Any]:
    async with client() as c:
        listing = await c.list(bucket, prefix, delimiter=delimiter)
    return {
        "bucket": bucket,
        "prefix": prefix,
        "objects": [o.to_json() for o in listing.objects],
        "common_prefixes": listing.common_prefixes,
    }


def stat(
    path: str = typer.Argument(..., help="tfs://bucket/key"),
    version_id: str | None = typer.Option(None, help="one version"),
    as_json: bool = JSON,
) -> None:
    """Size, checksums, content type, metadata and tags of an object."""
    remote = parse_remote(path)

    async def go() -> dict[str, Any]:
        async with client() as c:
            return (await c.stat(remote.bucket, remote.key, version_id=version_id)).to_json()

    info = run(go)
    if as_json:
        emit_json(info)
        return
    table = Table(show_header=False, box=None)
    for k, v in info.items():
        table.add_row(k, str(v))
    Console().print(table)


def rm(
    path: str = typer.Argument(..., help="tfs://bucket/key, or a prefix with -r"),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="every key under a prefix"),
    version_id: str | None = typer.Option(None, help="delete this version for good"),
    as_json: bool = JSON,
) -> None:
    """Delete a key (restorable for the server's retention time), or every key under a
    prefix with -r (server-side, one request)."""
    remote = parse_remote(path)
    if recursive and version_id:
        raise fail("--version-id names one version; it cannot go with -r", 2)
    if not recursive and (not remote.key or remote.key.endswith("/")):
        raise fail(f"{remote} names a prefix (use -r)", 2)

    async def go() -> dict[str, Any]:
        async with client() as c:
            if not recursive:
                return await c.delete(remote.bucket, remote.key, version_id=version_id)
            try:
                return await c.delete_prefix(remote.bucket, remote.prefix)
            except NotFound as exc:
                if exc.code != "NotFound":  # NoSuchBucket and friends are real answers
                    raise
                # A server without batch delete: one request per key.
                keys = [o.key async for o in c.iter_objects(remote.bucket, remote.prefix)]
                for key in keys:
                    await c.delete(remote.bucket, key)
                return {"deleted": len(keys), "failed": 0}

    result = run(go)
    if as_json:
        emit_json(result)
    elif recursive:
        typer.echo(f"deleted {_count(result.get('deleted'))} keys under {remote}")
    else:
        typer.echo(f"deleted {remote}")


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else int(value or 0)


def du(
    path: str = typer.Argument(..., help="tfs://bucket[/prefix]"),
    as_json: bool = JSON,
) -> None:
    """Objects and bytes under a prefix (latest versions)."""
    remote = parse_remote(path)

    async def go() -> tuple[int, int]:
        count = size = 0
        async with client() as c:
            async for o in c.iter_objects(remote.bucket, remote.key):
                count += 1
                size += o.size
        return count, size

    count, size = run(go)
    if as_json:
        emit_json({"bucket": remote.bucket, "prefix": remote.key, "objects": count, "bytes": size})
    else:
        typer.echo(f"{count} objects, {size:,} bytes ({format_size(size)}) in {remote}")


def presign(
    path: str = typer.Argument(..., help="tfs://bucket/key"),
    put: bool = typer.Option(False, "--put", help="a URL to upload instead of download"),
    expires_in: int = typer.Option(3600, help="seconds (at most 7 days)"),
    max_size: int | None = typer.Option(None, help="largest PUT body, bytes"),
    as_json: bool = JSON,
) -> None:
    """A URL that downloads (or --put uploads) one object without a token."""
    remote = parse_remote(path)

    async def go() -> dict[str, Any]:
        async with client() as c:
            return await c.presign(
                remote.bucket, remote.key, method="PUT" if put else "GET",
                expires_in=expires_in, max_size=max_size,
            )  # fmt: skip

    signed = run(go)
    if as_json:
        emit_json(signed)
    else:
        typer.echo(signed["url"])


def _local_digests(path: Path) -> tuple[int, str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(4 * 1024 * 1024):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return size, md5.hexdigest(), sha.hexdigest()


def verify(
    path: str = typer.Argument(..., help="tfs://bucket/key"),
    local: Path | None = typer.Argument(None, help="a local copy to compare instead"),
    as_json: bool = JSON,
) -> None:
    """Check an object's checksums: the server re-reads its stored bytes, or (with LOCAL)
    a local copy is hashed and compared with the object's size, MD5 and SHA-256.
    Exit 1 when anything differs."""
    remote = parse_remote(path)
    if local is not None:

        async def compare() -> dict[str, Any]:
            async with client() as c:
                info = await c.stat(remote.bucket, remote.key)
            size, md5, sha = _local_digests(local)
            return {
                "bucket": remote.bucket, "key": remote.key, "local": str(local),
                "ok": (size, md5, sha) == (info.size, info.etag, info.sha256),
                "size": {"local": size, "remote": info.size},
                "md5": {"local": md5, "remote": info.etag},
                "sha256": {"local": sha, "remote": info.sha256},
            }  # fmt: skip

        result = run(compare)
    else:

        async def server_side() -> dict[str, Any]:
            async with client() as c:
                answer = await c.verify(remote.bucket, remote.key)
            ok = answer.get("ok", answer.get("valid", answer.get("match")))
            return {"bucket": remote.bucket, "key": remote.key, **answer, "ok": bool(ok)}

        result = run(server_side)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"{'OK' if result['ok'] else 'MISMATCH'}  {remote}  {result.get('status', '')}")
        for field in ("size", "md5", "sha256"):
            if isinstance(result.get(field), dict):
                local_value, remote_value = result[field]["local"], result[field]["remote"]
                typer.echo(f"  {field}: local {local_value}, remote {remote_value}")
            elif isinstance(result.get("expected"), dict) and isinstance(
                result.get("actual"), dict
            ):
                typer.echo(
                    f"  {field}: recorded {result['expected'].get(field)}, "
                    f"stored {result['actual'].get(field)}"
                )
        # Where the stored bytes went bad (servers with block checksums name the blocks).
        blocks = result.get("damaged_blocks") or []
        for block in blocks:
            typer.echo(
                f"  damaged block {block['block']}: bytes {block['start']}-{block['end'] - 1}"
            )
        if result.get("damaged_block_count", 0) > len(blocks):
            typer.echo(f"  ... {result['damaged_block_count'] - len(blocks)} more damaged blocks")
    if not result["ok"]:
        raise typer.Exit(1)
