from __future__ import annotations

import pytest

# SeaweedFS (a real S3 server) and the fault-injecting proxy, for the S3 backend's tests.
pytest_plugins = ["tests.s3.fixtures"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
