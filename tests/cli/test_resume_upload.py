"""Must-show 1: a 2 GiB `tfstorage cp` killed with SIGKILL halfway, run again, resumes
from the parts the server holds (the bytes are counted by a proxy in front of the
server, not by the client) and ends with the right SHA-256."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, tfs
from tests.client.proxy import CountingProxy
from tests.server.conftest import ServerFactory

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

GiB = 1024**3
MiB = 1024**2
SIZE = 2 * GiB


def _sparse_file(path: Path, size: int) -> str:
    """A sparse file (quick to make) with random bytes in every 16 MiB, so no two parts
    are alike; returns its SHA-256."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset in range(0, size, 16 * MiB):
            f.seek(offset + 4096)
            f.write(os.urandom(4096))
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def test_a_killed_upload_resumes_from_the_stored_parts(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server({"MAX_FILE_SIZE": "3GB"})
    proxy = CountingProxy(server.port)
    try:
        src = tmp_path / "checkpoint.bin"
        expected = _sparse_file(src, SIZE)
        env = cli_env(tmp_path, proxy.url)
        args = [
            sys.executable,
            "-m",
            "tfstorage",
            "cp",
            "-q",
            str(src),
            "tfs://checkpoints/run/ckpt.bin",
        ]
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proxy.sent < SIZE // 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        sent_first = proxy.sent
        assert SIZE // 2 <= sent_first < SIZE

        with server.client() as c:
            sessions = c.get("/api/v1/uploads", params={"bucket": "checkpoints"}).json()["uploads"]
            assert [s["key"] for s in sessions] == ["run/ckpt.bin"]
            session = c.get(f"/api/v1/uploads/{sessions[0]['upload_id']}").json()
            stored = sum(p["size"] for p in session["parts"])
            assert stored >= SIZE // 3  # most of what was sent is kept
            assert c.head("/api/v1/download/checkpoints/run/ckpt.bin").status_code == 404

        proxy.reset_counts()
        second = tfs(
            "cp", "--json", str(src), "tfs://checkpoints/run/ckpt.bin", env=env, timeout=240
        )
        assert second.returncode == 0, second.stderr
        assert proxy.sent < 0.6 * SIZE, f"the second run sent {proxy.sent / SIZE:.0%} of the file"
        assert proxy.sent <= SIZE - stored + 64 * MiB  # about what was missing

        result = json.loads(second.stdout)
        assert result["object"]["sha256"] == expected and result["object"]["size"] == SIZE
        with server.client() as c:
            head = c.head("/api/v1/download/checkpoints/run/ckpt.bin")
            assert head.headers["x-checksum-sha256"] == expected
            assert (
                c.get("/api/v1/uploads", params={"bucket": "checkpoints"}).json()["uploads"] == []
            )
        assert not list((tmp_path / "cache" / "tfstorage" / "uploads").glob("*.json"))
    finally:
        proxy.close()
