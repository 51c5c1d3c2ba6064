"""The Dockerfile and compose.yaml, checked as far as a machine without a container engine
can: the compose file against the Compose Specification's JSON schema and the settings
the README says every instance must share; the image's entrypoint, environment and
healthcheck against a real server started as the server tests start it.

compose-spec.json is the Compose Specification's schema (github.com/compose-spec/
compose-spec, schema/compose-spec.json at 170098ba07d9, Apache-2.0), vendored unchanged.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from tests.server.conftest import SERVE_ARGS, ServerFactory
from tfstorage.config import Settings, load_settings
from tfstorage.service.backends import build_blob_store

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).with_name("compose-spec.json")).read_text())
INSTANCES = ("storage-1", "storage-2")
# README.md, "Scaling out": what every instance must agree on.
MUST_MATCH = (
    "DATABASE_URL",
    "STORAGE_TYPE",
    "S3_ENDPOINT_URL",
    "S3_BUCKET",
    "S3_PREFIX",
    "MINIO_ACCESS_KEY",
    "MINIO_SECRET_KEY",
    "ADMIN_TOKEN",
    "S3_SECRET_KEY",
    "ORPHAN_GRACE_SECONDS",
    "LIFECYCLE_PROTECTED_TAGS",
    "ARCHIVE_STORAGE_TYPE",
    "ARCHIVE_S3_PREFIX",
    "PUBLIC_URL",
)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


_VARIABLE = re.compile(r"\$\{([A-Z_]+)(:[-?])([^${}]*)\}")


def interpolated(value: str) -> str:
    """Compose's `${VAR:-default}` (the default) and `${VAR:?error}` (a stand-in value),
    innermost first."""
    while match := _VARIABLE.search(value):
        name, kind, default = match.groups()
        # A stand-in long enough for the settings that want long secrets (S3_SECRET_KEY).
        stand_in = default if kind == ":-" else f"x-{name.lower()}-from-the-environment"
        value = value[: match.start()] + stand_in + value[match.end() :]
    return value


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the final stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    instructions = [tuple(line.split(None, 1)) for line in lines if line and line[0] != "#"]
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return [(name.upper(), args.strip()) for name, args in instructions[last_from:]]


def instruction(name: str) -> str:
    [value] = [args for n, args in dockerfile() if n == name]
    return value


def image_env() -> dict[str, str]:
    pairs = shlex.split(" ".join(args for n, args in dockerfile() if n == "ENV"))
    return dict(pair.split("=", 1) for pair in pairs)


def test_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(SCHEMA)
    document = compose()
    assert [str(e) for e in validator.iter_errors(document)] == []
    # The schema is not vacuous: a misspelt key is caught.
    broken = copy.deepcopy(document)
    broken["services"]["storage-1"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert not validator.is_valid(broken)


def test_compose_runs_two_instances_that_share_what_must_match() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "seaweedfs", *INSTANCES, "proxy"}
    envs = [services[name]["environment"] for name in INSTANCES]
    assert envs[0] == envs[1]
    env = envs[0]
    assert set(MUST_MATCH) <= set(env)
    settings = {name.upper() for name in Settings.model_fields}
    assert set(env) <= settings, set(env) - settings  # no misspelt variable
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["STORAGE_TYPE"] == "s3" and env["S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    # No secret in the file: each is required from the environment (or .env).
    for name in ("MINIO_SECRET_KEY", "ADMIN_TOKEN", "S3_SECRET_KEY"):
        assert env[name].startswith("${") and ":?" in env[name], name
    assert ":?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    # Each instance has its own DATA_DIR volume; only the proxy publishes a port.
    volumes = [services[name]["volumes"] for name in INSTANCES]
    assert volumes[0] != volumes[1] and all(v[0].endswith(":/data") for v in volumes)
    assert [name for name, s in services.items() if "ports" in s] == ["proxy"]
    for name in INSTANCES:
        assert services[name]["build"] == "."
        for needed in ("postgres", "seaweedfs"):
            assert services[name]["depends_on"][needed]["condition"] == "service_healthy"
    for name in ("postgres", "seaweedfs", "proxy"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    # The S3 endpoint's key is not the SeaweedFS engine's secret (one secret, one use).
    assert env["S3_SECRET_KEY"] != env["MINIO_SECRET_KEY"]
    # The settings as an instance reads them: valid, and a blob store can be built of them.
    settings = load_settings(**{name.lower(): interpolated(value) for name, value in env.items()})
    assert settings.public_url == "http://localhost:8080"
    assert settings.database_url.endswith("@postgres:5432/tfstorage")
    assert build_blob_store(settings).name == "tiered"  # S3, with the archive tier
    nginx = compose()["configs"]["nginx-conf"]["content"]
    assert all(f"server {name}:8083" in nginx for name in INSTANCES)
    # The S3 door too, on the instances' S3_PORT (the image's default), with the Host
    # clients signed passed on.
    s3_port = image_env()["S3_PORT"]
    assert settings.s3_port == int(s3_port)
    assert all(f"server {name}:{s3_port}" in nginx for name in INSTANCES)
    assert f"listen {s3_port};" in nginx and "proxy_set_header Host $$http_host" in nginx
    assert any(p.endswith(f":{s3_port}") for p in services["proxy"]["ports"])
    for header in ("Host $$host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert f"proxy_set_header {header}" in nginx


def test_the_image_runs_what_the_server_tests_start() -> None:
    assert json.loads(instruction("ENTRYPOINT")) == ["tfstorage", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tfstorage"] == "tfstorage.cli.main:main"
    main = (ROOT / "src/tfstorage/__main__.py").read_text()
    assert "from tfstorage.cli.main import main" in main  # `python -m tfstorage` is the same
    assert SERVE_ARGS == ("-m", "tfstorage", "serve")
    assert image_env()["HOST"] == "0.0.0.0"  # a container listens on all
    assert image_env()["DATA_DIR"] == "/data" and instruction("VOLUME") == "/data"
    assert instruction("USER") not in ("root", "0")
    assert instruction("EXPOSE").split() == [image_env()["PORT"], image_env()["S3_PORT"]]
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line for line in lines if line and not line.startswith("#")]
    assert ignored[0] == "*" and {"!pyproject.toml", "!README.md", "!src/"} <= set(ignored)


@pytest.mark.server
def test_the_image_healthcheck_asks_a_real_server(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    healthcheck = instruction("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[0] == "python"
    env = image_env()
    server = make_server({"HOST": env["HOST"]})  # the image's listen address, a free port

    def probe() -> int:
        return subprocess.run(
            [sys.executable, *command[1:]],
            env={"PORT": str(server.port)},
            capture_output=True,
            timeout=30,
        ).returncode

    assert probe() == 0
    server.stop()
    assert probe() != 0
