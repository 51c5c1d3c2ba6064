"""S3 access key pairs: a second credential of a token, for SigV4-signing S3 clients.

The key id is stored (it names the token); the secret is not. SigV4 needs the secret
itself on the server, so a hash cannot verify it; instead it is derived:
HMAC-SHA256(server key, key id). The server key is kept OUT of the index: S3_SECRET_KEY,
or a key generated on first start into DATA_DIR/s3-secret.key (mode 0600). A copy of the
index alone (a leaked dump) therefore yields no working secret, and changing the server
key revokes every S3 secret at once: the rotation procedure (README.md, "Use it from S3
tools"). Several instances on one index must all set the same S3_SECRET_KEY, as they do
ADMIN_TOKEN.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tfstorage.config import Settings
from tfstorage.domain.records import Token
from tfstorage.errors import ConfigError
from tfstorage.index.access import AccessIndex
from tfstorage.service.context import StorageContext

KEY_FILE = "s3-secret.key"
KEY_ID_PREFIX = "TFSK"
_CACHE_SECONDS = 5.0  # as long as REST token lookups are reused (service/access.py)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True, slots=True)
class S3KeyPair:
    access_key_id: str
    secret_access_key: str = ""  # shown once; never stored

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"S3KeyPair(access_key_id={self.access_key_id!r})"


class S3Keys:
    def __init__(self, ctx: StorageContext, index: AccessIndex) -> None:
        self._ctx = ctx
        self._index = index
        self._server_key: bytes | None = None
        self._tokens: dict[str, tuple[float, Token | None, str]] = {}

    def load_server_key(self) -> None:
        """Read (or on first start make) the server key; called by the bootstrap, so a
        data directory gets its key file at first start, like admin.token."""
        self._server_key = server_key(self._ctx.settings)
        self._tokens.clear()  # no secret derived from another key stays cached

    def _derive(self, access_key_id: str) -> str:
        key = self._server_key
        if key is None:  # not bootstrapped (AUTH_ENABLED=false, some tests): read now
            key = self._server_key = server_key(self._ctx.settings)
        mac = hmac.new(key, access_key_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def verifies(self, access_key_id: str, secret: str) -> bool:
        """Is `secret` the one the current server key gives this key id?"""
        return hmac.compare_digest(self._derive(access_key_id).encode(), secret.encode())

    @staticmethod
    def new_key_id() -> str:
        """20 characters, AWS's length; the prefix makes a leaked key id greppable."""
        return KEY_ID_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(16))

    async def pair(self, access_key_id: str) -> S3KeyPair:
        """The pair of a key id just recorded; the secret is shown then and never again."""
        return S3KeyPair(access_key_id, self._derive(access_key_id))

    async def issue(self, token_id: str) -> S3KeyPair:
        """A new key pair for an existing token."""
        access_key_id = self.new_key_id()
        await self._ctx.db(self._index.create_s3_key, token_id, access_key_id)
        return await self.pair(access_key_id)

    def lookup(self, access_key_id: str) -> tuple[Token, str] | None:
        """The usable token behind a key and the key's secret; None for an unknown key or
        a revoked or expired token. Blocking: called from the signature check's thread."""
        if not access_key_id.startswith(KEY_ID_PREFIX) or len(access_key_id) > 32:
            return None
        now = time.monotonic()
        cached = self._tokens.get(access_key_id)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            _, token, secret = cached
        else:
            token = self._index.token_by_s3_key(access_key_id)
            # Derived with the lookup, not per request (an HMAC and a base64 each time);
            # only for a key that names a token: a made-up key id costs no derivation.
            secret = "" if token is None else self._derive(access_key_id)
            if len(self._tokens) > 10_000:  # bounded, whatever key ids clients send
                self._tokens.clear()
            self._tokens[access_key_id] = (now, token, secret)
        if token is None or token.revoked_at is not None:
            return None
        if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
            return None
        return token, secret

    def forget(self) -> None:
        """Drop cached lookups (a token was revoked through this instance)."""
        self._tokens.clear()

    async def write_credentials_file(self, path: Path, token_id: str) -> None:
        """DATA_DIR/admin.s3: AWS shared-credentials format, mode 0600."""
        pair = await self.issue(token_id)
        text = (
            "[default]\n"
            f"aws_access_key_id = {pair.access_key_id}\n"
            f"aws_secret_access_key = {pair.secret_access_key}\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)


def server_key(settings: Settings) -> bytes:
    """S3_SECRET_KEY, else DATA_DIR/s3-secret.key, made on first use if missing."""
    configured = settings.s3_secret_key.get_secret_value()
    if configured:
        return configured.encode()
    path = settings.data_dir / KEY_FILE
    if not path.exists():
        write_key_file(path)
    value = path.read_text().strip()
    if not value:
        raise ConfigError(f"{KEY_FILE} in DATA_DIR is empty; delete it or set S3_SECRET_KEY")
    return value.encode()


def write_key_file(path: Path) -> None:
    """A new random server key in `path` (mode 0600), unless one is there. Written to a
    temporary file and linked into place, so that a reader never sees a partial key and,
    of several workers starting at once, exactly one key wins."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another worker's came first: it wins
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
