"""Must-show 3: `tfstorage cp -r` of 10,000 small files up and back, verified; `sync`
run twice sends nothing the second time (requests counted by a proxy)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, tfs
from tests.client.proxy import CountingProxy
from tests.server.conftest import ServerFactory, ServerProcess
from tests.server.helpers import list_all

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]
FILES = 10_000


@pytest.fixture
def server(make_server: ServerFactory) -> ServerProcess:
    return make_server({"LOG_LEVEL": "WARNING"})


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[CountingProxy]:
    p = CountingProxy(server.port)
    yield p
    p.close()


def _make_tree(root: Path) -> dict[str, str]:
    """FILES files of 4 KiB in 10 directories (one nested), distinct contents."""
    made = {}
    for i in range(FILES):
        rel = f"shard-{i % 10}/{'deep/' if i % 10 == 9 else ''}sample-{i:05}.bin"
        data = os.urandom(16) + b"\0" * (4096 - 16)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        made[rel] = hashlib.sha256(data).hexdigest()
    return made


def _tree_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _writes(proxy: CountingProxy) -> list[bytes]:
    return [r.split(b"\r\n", 1)[0] for r in proxy.requests if r.startswith((b"POST", b"PUT"))]


def test_cp_r_ten_thousand_files_up_and_back_then_sync_twice(
    server: ServerProcess, proxy: CountingProxy, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    made = _make_tree(src)
    env = cli_env(tmp_path, proxy.url)

    up = tfs("cp", "-r", "--json", str(src), "tfs://artifacts/corpus", env=env, timeout=600)
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["transferred"] == FILES and report["failed"] == {}
    assert report["bytes"] == FILES * 4096
    with server.client() as c:
        listed = list_all(c, "artifacts")
    assert {k.removeprefix("corpus/"): o["sha256"] for k, o in listed.items()} == made

    back = tmp_path / "back"
    down = tfs("cp", "-r", "--json", "tfs://artifacts/corpus", str(back), env=env, timeout=600)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["transferred"] == FILES
    assert _tree_digests(back) == made

    # sync after cp: everything already matches, nothing is sent, in either direction.
    proxy.reset_counts()
    first = tfs("sync", "--json", str(src), "tfs://artifacts/corpus", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) | {"failed": {}} == {
        "source": str(src), "destination": "tfs://artifacts/corpus",
        "transferred": 0, "skipped": FILES, "failed": {}, "bytes": 0,
    }  # fmt: skip
    assert _writes(proxy) == []

    changed = src / "shard-3" / "sample-00003.bin"
    changed.write_bytes(b"new contents")
    proxy.reset_counts()
    second = tfs("sync", "--json", str(src), "tfs://artifacts/corpus", env=env)
    assert json.loads(second.stdout)["transferred"] == 1
    assert len(_writes(proxy)) == 1

    proxy.reset_counts()
    third = tfs("sync", "--json", str(src), "tfs://artifacts/corpus", env=env)
    assert json.loads(third.stdout)["transferred"] == 0
    assert _writes(proxy) == []

    proxy.reset_counts()
    pulled = tfs("sync", "--json", "tfs://artifacts/corpus", str(back), env=env)
    assert json.loads(pulled.stdout)["transferred"] == 1
    assert (back / "shard-3" / "sample-00003.bin").read_bytes() == b"new contents"
    again = tfs("sync", "--json", "tfs://artifacts/corpus", str(back), env=env)
    assert json.loads(again.stdout)["transferred"] == 0
    gets = [r for r in proxy.requests if r.startswith(b"GET /api/v1/files/download/")]
    assert len(gets) == 1  # the changed file, once
