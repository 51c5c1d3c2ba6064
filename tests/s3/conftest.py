from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3.fixtures import SeaweedFS
from tests.s3.proxy import FaultProxy


@pytest.fixture
def fault_proxy(seaweedfs: SeaweedFS) -> Iterator[FaultProxy]:
    """A `FaultProxy` in front of the session's SeaweedFS, in `pass` mode."""
    proxy = FaultProxy(seaweedfs.s3_port)
    yield proxy
    proxy.close()
