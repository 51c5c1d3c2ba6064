"""Where the SDK finds its server and token."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfstorage.client import ConfigurationError, config_path, resolve_config
from tfstorage.client.config import DEFAULT_URL


def test_defaults_to_the_local_server_and_its_admin_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_config() == resolve_config(DEFAULT_URL)
    assert resolve_config().token is None
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.token").write_text("tfs_local\n")
    monkeypatch.setenv("DATA_DIR", str(data))
    assert resolve_config().token == "tfs_local"
    # ...but never sent to a server elsewhere
    assert resolve_config("https://storage.example.com").token is None


def test_precedence_arguments_environment_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_path()
    assert path == tmp_path / "config" / "tfstorage" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('url = "http://file:1/"\ntoken = "tfs_file"\n')
    assert resolve_config() == resolve_config("http://file:1", "tfs_file")
    monkeypatch.setenv("TFSTORAGE_URL", "http://env:2")
    monkeypatch.setenv("TFSTORAGE_TOKEN", "tfs_env")
    config = resolve_config()
    assert (config.url, config.token) == ("http://env:2", "tfs_env")
    config = resolve_config("http://arg:3/", "tfs_arg")
    assert (config.url, config.token) == ("http://arg:3", "tfs_arg")
    monkeypatch.setenv("TFSTORAGE_TOKEN", "")  # empty counts as unset
    assert resolve_config().token == "tfs_file"


def test_bad_configuration_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("url = [unclosed")
    monkeypatch.setenv("TFSTORAGE_CONFIG", str(bad))
    with pytest.raises(ConfigurationError, match="config file"):
        resolve_config()
    monkeypatch.delenv("TFSTORAGE_CONFIG")
    with pytest.raises(ConfigurationError, match="http"):
        resolve_config("ftp://x")


def test_the_token_does_not_show_in_a_repr() -> None:
    """A config printed or logged (or in a traceback's locals) must not carry the secret."""
    config = resolve_config("http://h:1", "tfs_secret_value")
    assert config.token == "tfs_secret_value"
    assert "tfs_secret_value" not in repr(config) and "tfs_secret_value" not in str(config)
