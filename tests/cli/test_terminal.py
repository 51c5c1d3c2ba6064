"""Must-show 5: what a user sees. The CLI runs in a pseudo-terminal whose output is
rendered by a terminal emulator (pyte), so the progress bar is checked as it looks on
screen mid-transfer; and `--json` output, which scripts rely on, is checked as parsed."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest

from tests.cli.conftest import cli_env, tfs
from tests.client.proxy import CountingProxy
from tests.server.conftest import ServerFactory, ServerProcess
from tests.stored_blobs import blob_file_paths

pytestmark = pytest.mark.server
MiB = 1024 * 1024
COLUMNS, LINES = 120, 20


@pytest.fixture
def server(make_server: ServerFactory) -> ServerProcess:
    return make_server({})


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[CountingProxy]:
    p = CountingProxy(server.port)
    yield p
    p.close()


class Terminal:
    """A command on a pseudo-terminal, its output fed to an emulated screen."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        master, slave = pty.openpty()
        env = {**env, "COLUMNS": str(COLUMNS), "LINES": str(LINES), "TERM": "xterm-256color"}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.master = master
        # poll, not select: a long test session may already hold more than 1024 fds.
        self.poller = select.poll()
        self.poller.register(master, select.POLLIN)

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.poller.poll(50):
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return
                if not data:
                    return
                self.stream.feed(data)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            if re.search(pattern, self.text()):
                return self.text()
            if self.proc.poll() is not None:
                self.pump(0.5)
                break
        raise AssertionError(f"{pattern!r} never appeared; the screen:\n{self.text()}")

    def finish(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        self.pump(0.3)
        os.close(self.master)
        return self.proc.wait(5)


# "weights.bin ━━━━━━╸━━━━━━━━━ 12.0/40.0 MiB 3.9 MB/s 0:00:07"
_MID_TRANSFER = r"weights\.bin .*?(\d+\.\d)/40\.0 MiB\s+(\d+(\.\d+)?) [kM]B/s\s+(\d+:\d\d:\d\d)"


def test_the_progress_bar_as_the_user_sees_it(proxy: CountingProxy, tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(40 * MiB))
    proxy.upload_rate = 6 * MiB  # about seven seconds: long enough to look at the bar
    env = cli_env(tmp_path, proxy.url)
    term = Terminal(
        [sys.executable, "-m", "tfstorage", "cp", str(src), "tfs://artifacts/w/weights.bin"], env
    )
    screen = term.wait_for(_MID_TRANSFER, timeout=60)
    match = re.search(_MID_TRANSFER, screen)
    assert match is not None
    done, _rate, _, eta = match.groups()
    assert 0 < float(done) < 40, screen  # caught mid-transfer, not at the end
    assert eta != "0:00:00" or float(done) > 35, screen
    bar_line = next(line for line in screen.splitlines() if "weights.bin" in line)
    assert "━" in bar_line  # the bar itself is drawn

    assert term.finish(timeout=120) == 0, term.text()
    final = term.text()
    assert "40.0/40.0 MiB" in final
    # The line may wrap at the screen's width (a long temporary path): read it unwrapped.
    unwrapped = "".join(line.rstrip() for line in final.splitlines())
    assert re.search(r"uploaded\s*.*weights\.bin\s*->\s*tfs://artifacts/w/weights\.bin", unwrapped)


def test_no_progress_bar_when_not_a_terminal_or_quiet(
    server: ServerProcess, tmp_path: Path
) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(MiB))
    env = cli_env(tmp_path, server.base_url)
    piped = tfs("cp", str(src), "tfs://artifacts/q/w.bin", env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("uploaded ") and "━" not in piped.stdout + piped.stderr

    quiet = Terminal(
        [sys.executable, "-m", "tfstorage", "cp", "-q", str(src), "tfs://artifacts/q/w2.bin"], env
    )
    assert quiet.finish(timeout=60) == 0
    assert "━" not in quiet.text() and "uploaded" in quiet.text()


def test_json_output_shapes(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, server.base_url)
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights" * 1000)

    made = tfs("mb", "--json", "tfs://scratch", env=env)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["name"] == "scratch"

    up = json.loads(tfs("cp", "--json", str(src), "tfs://scratch/m/", env=env).stdout)
    assert up["destination"] == "tfs://scratch/m/model.pt"
    obj = up["object"]
    assert set(obj) == {
        "bucket", "key", "size", "etag", "sha256", "file_id", "content_type",
        "last_modified", "metadata", "tags", "is_latest", "deleted",
    }  # fmt: skip
    assert (obj["bucket"], obj["key"], obj["size"]) == ("scratch", "m/model.pt", 7000)

    assert json.loads(tfs("stat", "--json", "tfs://scratch/m/model.pt", env=env).stdout) == obj
    listing = json.loads(tfs("ls", "--json", "tfs://scratch/", env=env).stdout)
    assert listing == {"bucket": "scratch", "prefix": "", "objects": [], "common_prefixes": ["m/"]}
    listing = json.loads(tfs("ls", "-r", "--json", "tfs://scratch/m/", env=env).stdout)
    assert [o["key"] for o in listing["objects"]] == ["m/model.pt"]
    versions = json.loads(
        tfs("ls", "--versions", "--json", "tfs://scratch/m/model.pt", env=env).stdout
    )
    assert [v["file_id"] for v in versions["versions"]] == [obj["file_id"]]
    assert "scratch" in {
        b["name"] for b in json.loads(tfs("ls", "--json", env=env).stdout)["buckets"]
    }

    du = json.loads(tfs("du", "--json", "tfs://scratch/m/", env=env).stdout)
    assert du == {"bucket": "scratch", "prefix": "m/", "objects": 1, "bytes": 7000}
    checked = json.loads(
        tfs("verify", "--json", "tfs://scratch/m/model.pt", str(src), env=env).stdout
    )
    assert checked["ok"] is True and checked["sha256"]["local"] == obj["sha256"]
    remote_check = tfs("verify", "--json", "tfs://scratch/m/model.pt", env=env)
    assert remote_check.returncode == 0, remote_check.stderr
    assert json.loads(remote_check.stdout)["ok"] is True
    src.write_bytes(b"other weights")
    differs = tfs("verify", "tfs://scratch/m/model.pt", str(src), env=env)
    assert differs.returncode == 1 and differs.stdout.startswith("MISMATCH")
    signed = json.loads(tfs("presign", "--json", "tfs://scratch/m/model.pt", env=env).stdout)
    assert signed["method"] == "GET" and "/api/v1/" in signed["url"]

    back = tmp_path / "back.pt"
    down = json.loads(tfs("cp", "--json", "tfs://scratch/m/model.pt", str(back), env=env).stdout)
    assert down["object"]["sha256"] == obj["sha256"] and back.read_bytes() == b"weights" * 1000

    gone = tfs("rm", "--json", "tfs://scratch/m/model.pt", env=env)
    assert gone.returncode == 0 and json.loads(gone.stdout)["key"] == "m/model.pt"


def test_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, server.base_url)
    missing = tfs("stat", "tfs://artifacts/nope", env=env)
    assert missing.returncode == 1 and "NoSuchKey" in missing.stderr
    assert tfs("stat", "not-a-remote-path", env=env).returncode == 2
    assert tfs("cp", str(tmp_path), "tfs://artifacts/x", env=env).returncode == 2  # a dir, no -r
    assert tfs("frobnicate", env=env).returncode == 2
    bad_token = tfs("ls", "tfs://artifacts", env={**env, "TFSTORAGE_TOKEN": "tfs_wrong"})
    assert bad_token.returncode == 1 and "Unauthenticated" in bad_token.stderr


def test_verify_names_the_damaged_block(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, server.base_url)
    data = os.urandom(2 * MiB + 100)  # three blocks of the default 1 MiB
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    assert tfs("cp", "-q", str(src), "tfs://artifacts/v/w.bin", env=env).returncode == 0
    [blob] = blob_file_paths(server.data_dir / "blobs")  # too big to be packed
    with open(blob, "r+b") as f:
        f.seek(MiB + 7)
        f.write(bytes([data[MiB + 7] ^ 0x01]))
    checked = tfs("verify", "tfs://artifacts/v/w.bin", env=env)
    assert checked.returncode == 1 and checked.stdout.startswith("MISMATCH")
    assert f"  damaged block 1: bytes {MiB}-{2 * MiB - 1}" in checked.stdout.splitlines()


def test_remote_to_remote_copy_is_server_side(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, server.base_url)
    src = tmp_path / "tree"
    for name in ("a.bin", "sub/b.bin"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(name.encode() * 100)
    assert tfs("cp", "-r", "-q", str(src), "tfs://artifacts/run-1", env=env).returncode == 0
    copied = tfs(
        "cp", "-r", "--json", "tfs://artifacts/run-1", "tfs://checkpoints/run-1-copy", env=env
    )
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["copied"] == 2
    listing = json.loads(tfs("ls", "-r", "--json", "tfs://checkpoints/run-1-copy/", env=env).stdout)
    assert sorted(o["key"] for o in listing["objects"]) == [
        "run-1-copy/a.bin",
        "run-1-copy/sub/b.bin",
    ]
    assert tfs("cp", "tfs://artifacts/run-1/a.bin", "tfs://checkpoints/x", env=env).returncode == 2
