"""A real `tfstorage serve` process for tests that need signals, crashes or real sockets.

`ServerProcess` runs `python -m tfstorage serve` on a free loopback port with its own
environment and DATA_DIR, waits until GET /health answers 200, and stops it with SIGTERM
(SIGKILL after a short grace) or kills it outright with `kill()`. The server's output
goes to a log file, never a pipe (a full pipe would stall the server), and its tail is
shown in every failure message.

PostgreSQL: `postgres_database` creates a throwaway database on TEST_POSTGRES_URL
(default postgres@127.0.0.1:5432, trust auth) and drops it afterwards; an unreachable
server skips, or fails when CI is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.ports import holds_port

# The command every server test starts (after the interpreter); the Dockerfile's
# ENTRYPOINT runs the same (tests/deploy checks it).
SERVE_ARGS = ("-m", "tfstorage", "serve")
READY_TIMEOUT = 20.0
STOP_GRACE = 5.0
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "tfs_server-test-admin"
AUTH_HEADER = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"  # for hand-written requests

# Variables of the service that must never leak from the developer's shell into a test.
_SERVICE_VARS = (
    "HOST",
    "PORT",
    "WORKERS",
    "STORAGE_TYPE",
    "DATA_DIR",
    "DATABASE_URL",
    "DEFAULT_BUCKET",
    "MAX_FILE_SIZE",
    "RETENTION_DAYS",
    "GC_INTERVAL_SECONDS",
    "ORPHAN_GRACE_SECONDS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "PROMETHEUS_MULTIPROC_DIR",
    "CORS_ORIGINS",
    "MAX_LISTING_LIMIT",
    "AUTH_ENABLED",
    "ADMIN_TOKEN",
    "BODY_TIMEOUT_SECONDS",
    "HEADER_TIMEOUT_SECONDS",
    "BODY_MIN_RATE",
    "BODY_GRACE_SECONDS",
    "HTTP_IMPLEMENTATION",
    "LIFECYCLE_INTERVAL_SECONDS",
    "LIFECYCLE_MAX_DELETIONS_PER_RUN",
    "LIFECYCLE_PROTECTED_TAGS",
    "ARCHIVE_STORAGE_TYPE",
    "ARCHIVE_DATA_DIR",
    "ARCHIVE_S3_BUCKET",
    "ARCHIVE_S3_PREFIX",
    "S3_PORT",
    "S3_DOMAIN",
    "S3_REGION",
    "S3_SECRET_KEY",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One `tfstorage serve` subprocess; `start()` may be called again after a stop/kill
    (on a new free port, same DATA_DIR and environment)."""

    def __init__(
        self, data_dir: Path, env: Mapping[str, str] | None = None, *, log_dir: Path
    ) -> None:
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        self.log_dir = log_dir
        self.port = 0
        self.s3_port = 0  # set when the test asks for an S3 endpoint (S3_PORT="auto")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._starts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", httpx.Timeout(30.0))
        kwargs.setdefault("headers", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        return httpx.Client(base_url=self.base_url, **kwargs)  # type: ignore[arg-type]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k.upper() not in _SERVICE_VARS}
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            DATA_DIR=str(self.data_dir),
            GC_INTERVAL_SECONDS="0",
            ADMIN_TOKEN=ADMIN_TOKEN,
            PYTHONUNBUFFERED="1",
            # No S3 endpoint unless a test asks for one (S3_PORT="auto": a free port).
            S3_PORT="0",
        )
        env.update(self.extra_env)
        if self.s3_port:
            env["S3_PORT"] = str(self.s3_port)
        return env

    def log_tail(self, limit: int = 6000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no server output)"
        text = self.log_path.read_text(errors="replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def start(self, timeout: float = READY_TIMEOUT) -> ServerProcess:
        assert not self.running, "server already running"
        for _attempt in range(3):  # the free port may be taken between probe and bind
            if self._spawn_and_wait(timeout):
                return self
        pytest.fail(f"server could not bind a free port; output:\n{self.log_tail()}")

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _spawn_and_wait(self, timeout: float) -> bool:
        self.port = free_port()
        if self.extra_env.get("S3_PORT") == "auto" or self.s3_port:
            self.s3_port = free_port()
        self._starts += 1
        # Named by DATA_DIR too: a test's servers often share one log directory.
        self.log_path = self.log_dir / f"server-{self.data_dir.name}-{self._starts}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *SERVE_ARGS],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=2.0) as probe:
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None:
                    if "address already in use" in self.log_tail().lower():
                        return False
                    pytest.fail(f"server exited with {code} before ready:\n{self.log_tail()}")
                try:
                    response = probe.get("/health")
                    if response.status_code == 200 and holds_port(self.proc.pid, self.port):
                        return True
                    last = f"{response.status_code} {response.text[:300]}"
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if "address already in use" in self.log_tail().lower():
                    # With WORKERS=N the parent lives on while its workers fail to bind:
                    # another test's server took the port after the parent had checked
                    # it (ports.py). Another port, as when the parent itself fails; the
                    # whole session, so that no worker of this one lingers.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
                    return False
                time.sleep(0.05)
        self.kill()
        pytest.fail(
            f"server not ready within {timeout:.0f} s (last /health: {last}); "
            f"output:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing, like a crash or the OOM killer."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then SIGKILL if it has not exited after `grace` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait(timeout=10)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """`make_server(env=..., data_dir=...)` -> a started `ServerProcess`, stopped at teardown."""
    servers: list[ServerProcess] = []

    def factory(
        env: Mapping[str, str] | None = None, *, data_dir: Path | None = None
    ) -> ServerProcess:
        n = len(servers)
        server = ServerProcess(data_dir or tmp_path / f"data-{n}", env, log_dir=tmp_path)
        servers.append(server)
        return server.start()

    yield factory
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy psycopg URL); dropped afterwards."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin_url = make_url(os.environ.get("TEST_POSTGRES_URL") or DEFAULT_PG)
    conninfo = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        where = admin_url.render_as_string(hide_password=True)
        reason = f"PostgreSQL not reachable at {where} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(f"{reason}; start one or set TEST_POSTGRES_URL")
    name = f"tfs_server_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = admin_url.set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy psycopg URL); dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url
