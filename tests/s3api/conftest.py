"""The real server most S3 API test modules share: one `tfstorage serve` per module with
its S3 port on, a REST client with the admin token and a boto3 client with the admin's
S3 keys. A module that needs another environment defines its own `server`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from botocore.client import BaseClient

from tests.s3api.test_endpoint_server import admin_keys, s3_client
from tests.server.conftest import ServerProcess


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    proc = ServerProcess(root / "data", {"S3_PORT": "auto"}, log_dir=root)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def rest(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def s3(server: ServerProcess) -> BaseClient:
    return s3_client(server, *admin_keys(server))
