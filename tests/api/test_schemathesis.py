"""Schemathesis against the app's own OpenAPI: no route answers 5xx to anything the
schema allows, and the answers match their documented schemas."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import response_schema_conformance
from starlette.testclient import TestClient

from tests.api.conftest import ADMIN, make_settings
from tfstorage.api.app import create_app

_DATA = Path(tempfile.mkdtemp(prefix="tfs-schemathesis-"))
app = create_app(make_settings(_DATA))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def running_app() -> Iterator[None]:
    with TestClient(app):  # runs the lifespan: index, blob store, standard buckets
        yield
    shutil.rmtree(_DATA, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_schema_conformance(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers=ADMIN,
        checks=[schemathesis.checks.not_a_server_error, response_schema_conformance],
    )
