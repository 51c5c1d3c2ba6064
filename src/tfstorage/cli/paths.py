"""Command-line locations: `tfs://bucket/key` for remote objects, anything else local."""

from __future__ import annotations

from dataclasses import dataclass

import typer

SCHEME = "tfs://"


@dataclass(frozen=True)
class RemotePath:
    """`bucket` and `key` ("" for the bucket itself) of a `tfs://bucket/key` argument."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def prefix(self) -> str:
        """The key as a directory prefix: "" or ending in '/'."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"

    @property
    def basename(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]


def is_remote(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_remote(text: str) -> RemotePath:
    """Parse `tfs://bucket[/key]`; anything else is a usage error (exit 2)."""
    if not is_remote(text):
        raise typer.BadParameter(f"expected tfs://bucket/key, got {text!r}")
    bucket, _, key = text.removeprefix(SCHEME).partition("/")
    if not bucket:
        raise typer.BadParameter(f"no bucket in {text!r}")
    return RemotePath(bucket, key)
