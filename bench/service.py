"""The service as a real subprocess, its memory, and (optionally) a py-spy recording."""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from load import Target

BIN = Path(sys.prefix) / "bin"
SRC = Path(__file__).resolve().parent.parent / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`tfstorage serve` on a free loopback port with its own DATA_DIR."""

    host = "127.0.0.1"

    def __init__(
        self, data_dir: Path, log: IO[bytes], extra_env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        # Works whether access control is on (the admin token) or off (ignored).
        self.token = secrets.token_urlsafe(32)
        env = os.environ | {
            "HOST": self.host,
            "PORT": str(self.port),
            "DATA_DIR": str(data_dir),
            "MAX_FILE_SIZE": "2GB",
            "GC_INTERVAL_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
            "ADMIN_TOKEN": self.token,
            "S3_PORT": "0",  # no S3 endpoint (default port 9000) unless a phase asks
        }
        # The code of this checkout, whichever one the shared virtualenv was installed from.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
        )
        env |= extra_env or {}  # STORAGE_TYPE=s3 and its engine, for the `s3` phase
        self.proc = subprocess.Popen(
            [str(BIN / "tfstorage"), "serve"], env=env, stdout=log, stderr=log
        )
        self.health_status = self._wait_ready()

    @property
    def target(self) -> Target:
        return Target(self.host, self.port, self.token)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_ready(self, timeout: float = 60) -> int:
        """Wait until GET /health answers; returns its status (200 unless degraded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} at start-up")
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                conn.request("GET", "/health", headers={"Authorization": f"Bearer {self.token}"})
                return conn.getresponse().status
            except OSError:
                time.sleep(0.1)
            finally:
                conn.close()
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def status_kib(self, field: str) -> int:
        """A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def blob_files(self) -> list[Path]:
        """The files holding the server's blobs: one per big blob (`ab/cd/<id>`), and the
        packs that hold the small ones (PACK_THRESHOLD, on by default) with their index,
        which a cold read of a packed blob goes through too. Not unfinished writes."""
        root = self.data_dir / "blobs"
        files = [p for p in root.glob("[0-9a-f][0-9a-f]/[0-9a-f][0-9a-f]/*") if p.is_file()]
        packs = root / ".packs"
        files += [p for p in packs.glob("*.pack") if not p.name.startswith("tmp-")]
        files += [p for p in packs.glob("index.sqlite*") if p.is_file()]
        return files


class RssSampler:
    """Samples the server's VmRSS every `interval` seconds in a thread; `peak_kib` is the max."""

    def __init__(self, server: Server, interval: float = 0.05) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_kib = 0

    def _run(self) -> None:
        while True:
            try:
                self.peak_kib = max(self.peak_kib, self._server.status_kib("VmRSS"))
            except (OSError, KeyError):
                return  # the server is gone
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


@contextmanager
def recording(pid: int, output: Path) -> Iterator[None]:
    """py-spy samples the process (every thread, not idle ones) while the block runs."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (`.venv/bin/pip install py-spy`)")
    cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250"]
    spy = subprocess.Popen(
        [*cmd, "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)  # attaching takes a moment
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        if not output.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")


def summarize(raw: Path, top: int = 15) -> str:
    """Where the samples are: the functions on CPU themselves, and the project's own
    functions (`tfstorage/`) anywhere in the stack."""
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in {f for f in frames if f.partition(" (")[2].startswith("tfstorage/")}:
            ours[frame] += n
    out = [f"{total} samples (threads that were not idle)"]
    for title, counter in (("self", own), ("inclusive, tfstorage only", ours)):
        out.append(f"  top {top}, {title}:")
        out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in counter.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    """`func (/long/path/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where}" if where else name
