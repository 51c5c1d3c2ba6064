"""One real `tfstorage serve` with its S3 endpoint, shared by every S3 client test here.

Each client (aws-cli, s3fs, rclone, minio, MLflow, DVC) writes through the S3 door and
the test reads the same object back through the REST door, comparing SHA-256 on both
sides (and the reverse: REST writes, the client reads). Each test file works in a bucket
of its own, so the files share the server (one per pytest worker) without sharing state.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.s3api.test_endpoint_server import admin_keys
from tests.server.conftest import ServerProcess

REGION = "us-east-1"
AWS_CONFIG = f"""[default]
region = {REGION}
s3 =
    signature_version = s3v4
    addressing_style = path
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    return sha256(path.read_bytes())


@dataclass(frozen=True)
class RestDoor:
    """The REST API of the same server: what a client wrote over S3, seen from the other door."""

    client: httpx.Client

    def sha256(self, bucket: str, key: str) -> str:
        """Downloads the object and checks the bytes against the SHA-256 the server records."""
        response = self.client.get(f"/api/v1/download/{bucket}/{key}")
        assert response.status_code == 200, (
            f"{bucket}/{key}: {response.status_code} {response.text}"
        )
        digest = sha256(response.content)
        assert response.headers["x-checksum-sha256"] == digest
        return digest

    def put(self, bucket: str, key: str, data: bytes) -> None:
        response = self.client.put(f"/api/v1/objects/{bucket}/{key}", content=data)
        assert response.status_code == 200, response.text

    def listing(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """key -> recorded SHA-256 of every object under `prefix`."""
        response = self.client.get(
            f"/api/v1/list/{bucket}", params={"prefix": prefix, "limit": 1000}
        )
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        assert not page["truncated"]
        return {obj["key"]: obj["sha256"] for obj in page["objects"]}

    def make_bucket(self, name: str) -> str:
        response = self.client.post("/api/v1/buckets", json={"name": name})
        assert response.status_code in (200, 201), response.text
        return name


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("s3clients")
    proc = ServerProcess(root / "data", {"S3_PORT": "auto"}, log_dir=root)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def rest(server: ServerProcess) -> Iterator[RestDoor]:
    with server.client() as client:
        yield RestDoor(client)


@pytest.fixture(scope="session")
def s3_keys(server: ServerProcess) -> tuple[str, str]:
    """The admin token's key pair, from the `admin.s3` the server wrote on its first start."""
    return admin_keys(server)


@pytest.fixture(scope="session")
def credentials_file(server: ServerProcess) -> Path:
    return server.data_dir / "admin.s3"


@pytest.fixture
def client_env(credentials_file: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a client process: the server's credentials file and nothing of
    the developer's own AWS set-up (profiles, keys, config)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # aws-cli v1 presigns with SigV2 unless told, and the server refuses SigV2.
    (home / "aws-config").write_text(AWS_CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_", "MLFLOW_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        AWS_SHARED_CREDENTIALS_FILE=str(credentials_file),
        AWS_CONFIG_FILE=str(home / "aws-config"),
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        # No usage reports from the tools to their vendors during a test run.
        DVC_NO_ANALYTICS="1",
        DO_NOT_TRACK="true",
    )
    return env
