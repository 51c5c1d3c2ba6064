"""What the CLI says when the server refuses: the server's code and message, plus what a
CLI user can do about it in the CLI's own terms (flags, variables, files), not HTTP's."""

from __future__ import annotations

from tfstorage.client.config import config_path, resolve_config
from tfstorage.client.errors import ConfigurationError, TFStorageError, Unauthenticated


def describe(error: TFStorageError, url: str | None, token: str | None) -> str:
    """The message for `error`; `url` and `token` are the --url/--token given, if any."""
    if isinstance(error, Unauthenticated):
        return f"{error}\n{_token_hint(url, token)}"
    return str(error)


def _token_hint(url: str | None, token: str | None) -> str:
    ways = (
        f"give one with --token, the TFSTORAGE_TOKEN variable, or a line "
        f'token = "..." in the config file {config_path()}'
    )
    try:
        sent = resolve_config(url, token).token is not None
    except ConfigurationError:
        sent = False
    if sent:
        return f"the server refused the token that was sent (unknown, revoked or expired): {ways}"
    return (
        f"no token was sent: {ways}; for a server on this machine, point DATA_DIR at its "
        "data directory (its first start wrote DATA_DIR/admin.token) or run from the "
        "directory that holds data/"
    )
