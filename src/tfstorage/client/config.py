"""Where the SDK and the CLI find the server and the token.

In order, the first that gives a value wins:

1. arguments (`Client(url=..., token=...)`, `tfstorage --url/--token`);
2. `TFSTORAGE_URL` / `TFSTORAGE_TOKEN` (an empty value counts as unset);
3. the config file: `TFSTORAGE_CONFIG`, else `$XDG_CONFIG_HOME/tfstorage/config.toml`
   (`~/.config/tfstorage/config.toml`), with top-level `url = "..."` and `token = "..."`;
4. for a server on this machine (a loopback URL), the admin token its first start wrote
   into `DATA_DIR/admin.token` (`DATA_DIR` defaults to `./data`, as for the server).

The URL defaults to `http://127.0.0.1:8083`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tfstorage.client.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8083"


@dataclass(frozen=True)
class ClientConfig:
    """A resolved server URL (no trailing slash) and token (None: anonymous)."""

    url: str
    token: str | None = field(repr=False)  # a secret: never in a printed or logged repr


def config_path() -> Path:
    """The config file's path (it need not exist)."""
    if explicit := os.environ.get("TFSTORAGE_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tfstorage" / "config.toml"


def _config_file() -> dict[str, str]:
    path = config_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc}") from None
    return {k: v for k, v in data.items() if k in ("url", "token") and isinstance(v, str)}


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local_admin_token() -> str | None:
    path = Path(os.environ.get("DATA_DIR") or "./data") / "admin.token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def resolve_config(url: str | None = None, token: str | None = None) -> ClientConfig:
    """The URL and token to use, from arguments, environment, config file, DATA_DIR."""
    file = _config_file()
    resolved_url = url or os.environ.get("TFSTORAGE_URL") or file.get("url") or DEFAULT_URL
    resolved_url = resolved_url.rstrip("/")
    if urlsplit(resolved_url).scheme not in ("http", "https"):
        raise ConfigurationError(f"not an http(s) URL: {resolved_url!r}")
    resolved_token = token or os.environ.get("TFSTORAGE_TOKEN") or file.get("token")
    if not resolved_token and _is_loopback(resolved_url):
        resolved_token = _local_admin_token()
    return ClientConfig(resolved_url, resolved_token or None)
