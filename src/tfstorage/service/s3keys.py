"""S3 access key pairs: a second credential of a token, for SigV4-signing S3 clients.

The key id is stored (it names the token); the secret is not. SigV4 needs the secret
itself on the server, so a hash cannot verify it; instead it is derived:
HMAC-SHA256(server key, key id), with the server key kept in the index beside the
presigned-URL key and shared by every instance. Nothing secret is at rest per key and
there is nothing to decrypt; a stolen index without the `server_secrets` row reveals no
secret, and rotating that row invalidates every S3 secret at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tfstorage.domain.records import Token
from tfstorage.index.access import AccessIndex
from tfstorage.service.context import StorageContext

SERVER_KEY = "s3-secret-key"
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
        self._server_key: tuple[float, bytes] | None = None
        self._tokens: dict[str, tuple[float, Token | None]] = {}

    def _current_server_key(self) -> bytes:
        """Blocking (an index call): for worker threads, like `lookup`."""
        now = time.monotonic()
        if self._server_key is None or now - self._server_key[0] >= _CACHE_SECONDS:
            value = self._index.shared_secret(SERVER_KEY)
            self._server_key = (now, bytes.fromhex(value))
        return self._server_key[1]

    def _derive(self, access_key_id: str) -> str:
        mac = hmac.new(self._current_server_key(), access_key_id.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    @staticmethod
    def new_key_id() -> str:
        """20 characters, AWS's length; the prefix makes a leaked key id greppable."""
        return KEY_ID_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(16))

    async def pair(self, access_key_id: str) -> S3KeyPair:
        """The pair of a key id just recorded; the secret is shown then and never again."""
        return S3KeyPair(access_key_id, await self._ctx.db(self._derive, access_key_id))

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
            token = cached[1]
        else:
            token = self._index.token_by_s3_key(access_key_id)
            if len(self._tokens) > 10_000:  # bounded, whatever key ids clients send
                self._tokens.clear()
            self._tokens[access_key_id] = (now, token)
        if token is None or token.revoked_at is not None:
            return None
        if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
            return None
        return token, self._derive(access_key_id)

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
