"""Keys are opaque text: characters that mean something in a URL ('#', '?', '%', ' ',
non-ASCII) must reach the object of that exact key, never another one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tfstorage.client import AsyncClient, NoSuchKey

pytestmark = pytest.mark.anyio

ODD_KEYS = ["w#1.bin", "q?x=1", "p%41", "sp ace", "dé.bin"]


async def test_keys_with_url_characters_reach_their_own_object(
    sdk: AsyncClient, tmp_path: Path
) -> None:
    await sdk.upload_bytes(b"plain w", "artifacts", "odd/w")
    for name in ODD_KEYS:
        key = f"odd/{name}"
        src = tmp_path / "src.bin"
        src.write_bytes(name.encode() * 100)
        info = await sdk.upload_file(src, "artifacts", key)
        assert info.key == key
        assert (await sdk.stat("artifacts", key)).sha256 == info.sha256
        assert [v.file_id for v in await sdk.versions("artifacts", key)] == [info.file_id]
        dest = tmp_path / "dest.bin"
        await sdk.download_file("artifacts", key, dest)
        assert dest.read_bytes() == src.read_bytes()
        assert await sdk.download_bytes("artifacts", key) == src.read_bytes()
        await sdk.delete("artifacts", key)
        with pytest.raises(NoSuchKey):
            await sdk.stat("artifacts", key)
    listing = await sdk.list("artifacts", "odd/")
    assert [(o.key, o.size) for o in listing.objects] == [("odd/w", 7)]


async def test_a_directory_with_url_characters_in_names_keeps_every_file(
    sdk: AsyncClient, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    made = {"w": b"plain", **{name: os.urandom(100) for name in ODD_KEYS}}
    for name, data in made.items():
        (src / name).write_bytes(data)
    report = await sdk.upload_dir(src, "artifacts", "tree/")
    assert report.ok, report.failed
    keys = [o.key for o in (await sdk.list("artifacts", "tree/")).objects]
    assert sorted(keys) == sorted(f"tree/{n}" for n in made)
    dst = tmp_path / "dst"
    assert (await sdk.download_prefix("artifacts", "tree/", dst)).ok
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == made


async def test_keys_that_would_share_a_local_path_are_not_mixed_up(
    sdk: AsyncClient, tmp_path: Path
) -> None:
    """A folder marker ("sub/", as S3 consoles make) becomes a directory, not a file
    that blocks everything under it; keys that would land on one local path ("x//y" and
    "x/y", or a key named like another's partial file) are refused, not written over
    each other — the result must not depend on which transfer finished last."""
    stored = {
        "m/sub/": b"",
        "m/sub/a": b"A",
        "m/x//y": b"double",
        "m/x/y": b"single",
        "m/z/.y.tfs-partial": b"looks like a partial file",
    }
    for key, data in stored.items():
        await sdk.upload_bytes(data, "artifacts", key)
    dst = tmp_path / "dst"
    for _ in range(2):
        report = await sdk.download_prefix("artifacts", "m/", dst)
        assert set(report.failed) == {"m/x//y", "m/z/.y.tfs-partial"}
        files = {p.relative_to(dst).as_posix(): p.read_bytes() for p in dst.rglob("*") if p.is_file()}
        assert files == {"sub/a": b"A", "x/y": b"single"}
