"""The CLI's error messages speak the CLI (issue 10): flags, variables and files a user
can act on, not the HTTP API's query parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import cli_env, tfs
from tests.server.conftest import ServerFactory, ServerProcess

pytestmark = pytest.mark.server


@pytest.fixture
def server(make_server: ServerFactory) -> ServerProcess:
    return make_server({})


def test_rb_of_a_non_empty_bucket_names_the_flag(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, server.base_url)
    (tmp_path / "m.pt").write_bytes(b"weights")
    assert tfs("mb", "tfs://scratch", env=env).returncode == 0
    assert tfs("cp", "-q", str(tmp_path / "m.pt"), "tfs://scratch/m.pt", env=env).returncode == 0
    refused = tfs("rb", "tfs://scratch", env=env)
    assert refused.returncode == 1
    assert (
        "BucketNotEmpty" in refused.stderr
        and "tfstorage rb --force tfs://scratch" in refused.stderr
    )
    assert "?force" not in refused.stderr
    with server.client() as c:  # nothing was removed
        assert c.get("/api/v1/buckets/scratch").status_code == 200


def test_a_missing_token_says_how_to_give_one(server: ServerProcess, tmp_path: Path) -> None:
    env = cli_env(tmp_path, server.base_url, TFSTORAGE_TOKEN="")
    config = tmp_path / "config" / "tfstorage" / "config.toml"
    for args in (["ls", "tfs://models"], ["token", "list"]):  # the SDK path, the plain-HTTP one
        result = tfs(*args, env=env)
        assert result.returncode == 1, result.stderr
        assert "Unauthenticated" in result.stderr and "no token was sent" in result.stderr
        for way in ("--token", "TFSTORAGE_TOKEN", str(config), "DATA_DIR/admin.token"):
            assert way in result.stderr, (way, result.stderr)


def test_a_refused_token_is_told_apart_from_a_missing_one(
    server: ServerProcess, tmp_path: Path
) -> None:
    env = cli_env(tmp_path, server.base_url)
    result = tfs("--token", "tfs_revoked_or_made_up", "ls", "tfs://models", env=env)
    assert result.returncode == 1
    assert "refused the token that was sent" in result.stderr and "--token" in result.stderr
    assert "no token was sent" not in result.stderr
