from __future__ import annotations

from tests.server.conftest import make_server  # noqa: F401  (fixture)
