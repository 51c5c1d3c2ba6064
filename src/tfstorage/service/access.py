"""Tokens, the bootstrap admin token, presigned URLs and the audit log."""

from __future__ import annotations

import configparser
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tfstorage.domain.caller import SCOPES, Caller, validate_bucket_pattern
from tfstorage.domain.names import validate_bucket_name, validate_key
from tfstorage.domain.records import AuditEntry, Token
from tfstorage.domain.text import check_storable
from tfstorage.errors import AccessDenied, InvalidArgument, Unauthenticated
from tfstorage.index.access import AccessIndex, NoSuchToken
from tfstorage.service.audit_buffer import AuditBuffer
from tfstorage.service.context import StorageContext
from tfstorage.service.s3keys import S3KeyPair, S3Keys

log = logging.getLogger(__name__)

TOKEN_PREFIX = "tfs_"  # noqa: S105 - a marker that makes leaked tokens greppable
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
_TOUCH_EVERY = 60.0  # seconds between last-used updates of one token
# How long a token lookup is reused. Revocation through this instance takes effect at
# once; through another instance sharing the index, within this many seconds.
TOKEN_CACHE_SECONDS = 5.0
SIGNATURE_PARAMS = ("X-Tfs-Expires", "X-Tfs-Token", "X-Tfs-Max-Size", "X-Tfs-Signature")
# The presigned URLs' HMAC key, shared by every instance through the index. Each instance
# re-reads it this often, so a rotation through one reaches the others within as long.
SIGNING_KEY = "presign-signing-key"
SIGNING_KEY_CACHE_SECONDS = TOKEN_CACHE_SECONDS


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: Token
    secret: str  # shown once, never stored
    s3: S3KeyPair | None = None  # an S3 key pair of the token, when asked for


@dataclass(frozen=True, slots=True)
class Presigned:
    url: str
    expires_at: datetime


class AccessService:
    def __init__(self, ctx: StorageContext, index: AccessIndex) -> None:
        self._ctx = ctx
        self._index = index
        self._touched: dict[str, float] = {}
        self._cache: dict[str, tuple[float, Token | None]] = {}
        self._signing_key: bytes | None = None
        self._signing_key_read = -SIGNING_KEY_CACHE_SECONDS
        self.s3 = S3Keys(ctx, index)
        self.audit_log = AuditBuffer(index.record)

    @property
    def enabled(self) -> bool:
        return self._ctx.settings.auth_enabled

    # bootstrap -----------------------------------------------------------------------
    async def bootstrap(self) -> None:
        """ADMIN_TOKEN, or on first start a generated admin token in DATA_DIR/admin.token."""
        settings = self._ctx.settings
        await self._current_signing_key()
        # Before any key pair is issued: the S3 server key, from S3_SECRET_KEY or
        # DATA_DIR/s3-secret.key (made now on a first start).
        await self._ctx.db(self.s3.load_server_key)
        if not self.enabled:
            log.warning("AUTH_ENABLED=false: every request has full rights; never expose this port")
            return
        # One worker at a time runs what follows (service/startup_lock.py): a later one
        # finds the token, admin.token and admin.s3 that an earlier one made.
        s3_file = settings.data_dir / "admin.s3"
        if settings.admin_token:
            secret_hash = hash_secret(settings.admin_token)
            found = await self._ctx.db(self._index.token_by_hash, secret_hash)
            if found is not None:  # every start but the first: no write
                await self._refresh_admin_s3(s3_file, found)
                return
            # Other instances on the same index may be making it at this moment.
            token, made = await self._ctx.db(
                self._index.ensure_token,
                name="admin (ADMIN_TOKEN)",
                owner="admin",
                secret_hash=secret_hash,
                scopes=list(SCOPES),
            )
            if made:
                await self.s3.write_credentials_file(s3_file, token.id)
            else:
                await self._refresh_admin_s3(s3_file, token)
            return
        if await self._ctx.db(self._index.count_tokens):
            await self._upgrade_admin_s3(settings.data_dir / "admin.token", s3_file)
            if not (settings.data_dir / "admin.token").exists():
                # Another instance sharing the index made the admin token (and wrote it
                # into its own DATA_DIR), or it was removed: the CLI's local fallback
                # finds nothing here.
                log.warning(
                    "no DATA_DIR/admin.token on this instance; with several instances on"
                    " one index, set ADMIN_TOKEN on every one"
                )
            return
        secret = _new_secret()
        token = await self._create(name="admin", owner="admin", secret=secret)
        await self.s3.write_credentials_file(s3_file, token.id)
        path = settings.data_dir / "admin.token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, 0o600)
        log.warning("first start: an admin token was written to %s (mode 0600)", path.resolve())

    async def _upgrade_admin_s3(self, token_file: Path, s3_file: Path) -> None:
        """A data directory from before S3 keys: give its admin token an admin.s3 too (or
        a new pair in a stale one)."""
        if not token_file.exists():
            return
        secret = token_file.read_text().strip()
        token = await self._ctx.db(self._index.token_by_hash, hash_secret(secret))
        if token is not None and s3_file.exists():
            await self._refresh_admin_s3(s3_file, token)
        elif token is not None and token.revoked_at is None:
            await self.s3.write_credentials_file(s3_file, token.id)
            log.warning("an S3 key pair of the admin token was written to %s (mode 0600)", s3_file)

    async def _refresh_admin_s3(self, s3_file: Path, token: Token) -> None:
        """An admin.s3 written under an earlier S3 server key (rotated, or from before
        revision 0012) holds a dead secret: give the admin token a new pair in its place."""
        if not s3_file.exists() or token.revoked_at is not None:
            return
        written = configparser.ConfigParser(interpolation=None)
        written.read(s3_file)
        pair = written["default"] if written.has_section("default") else {}
        key_id = pair.get("aws_access_key_id", "")
        if key_id and self.s3.verifies(key_id, pair.get("aws_secret_access_key", "")):
            return
        await self.s3.write_credentials_file(s3_file, token.id)
        log.warning("the S3 server key changed: a new admin key pair was written to %s", s3_file)

    async def _create(self, *, name: str, owner: str, secret: str) -> Token:
        return await self._ctx.db(
            self._index.create_token,
            name=name,
            owner=owner,
            secret_hash=hash_secret(secret),
            scopes=list(SCOPES),
            buckets=["*"],
            prefix="",
            expires_at=None,
        )

    # authentication --------------------------------------------------------------------
    async def _lookup(self, secret_hash: str) -> Token | None:
        now = time.monotonic()
        cached = self._cache.get(secret_hash)
        if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        token = await self._ctx.db(self._index.token_by_hash, secret_hash)
        if len(self._cache) > 10_000:  # bounded, whatever garbage clients send
            self._cache.clear()
        self._cache[secret_hash] = (now, token)
        return token

    async def authenticate(self, secret: str) -> Caller:
        token = await self._lookup(hash_secret(secret))
        # The lookup is by a hash of the secret: timing reveals nothing about a valid token.
        if token is None:
            raise Unauthenticated("the token is not valid")
        self._check_usable(token)
        now = time.monotonic()
        if now - self._touched.get(token.id, -_TOUCH_EVERY) >= _TOUCH_EVERY:
            self._touched[token.id] = now
            await self._ctx.db(self._index.touch_token, token.id, datetime.now(UTC))
        return caller_of(token)

    @staticmethod
    def _check_usable(token: Token) -> None:
        if token.revoked_at is not None:
            raise Unauthenticated("the token has been revoked")
        if token.expires_at is not None and token.expires_at <= datetime.now(UTC):
            raise Unauthenticated("the token has expired")

    # tokens ----------------------------------------------------------------------------
    async def create_token(
        self,
        *,
        name: str,
        owner: str,
        scopes: list[str],
        buckets: list[str],
        prefix: str,
        expires_in: int | None,
        s3: bool = False,
    ) -> IssuedToken:
        if not name.strip():
            raise InvalidArgument("a token needs a name")
        unknown = sorted(set(scopes) - set(SCOPES))
        if not scopes or unknown:
            raise InvalidArgument(f"scopes must be some of {', '.join(SCOPES)}")
        if not buckets:
            raise InvalidArgument("a token needs at least one bucket pattern")
        try:
            patterns = [validate_bucket_pattern(b) for b in buckets]
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if prefix:
            validate_key(prefix + "x")
        if expires_in is not None and expires_in <= 0:
            raise InvalidArgument("expires_in must be a positive number of seconds")
        expires_at = (
            datetime.now(UTC) + timedelta(seconds=expires_in) if expires_in is not None else None
        )
        secret = _new_secret()
        s3_key_id = self.s3.new_key_id() if s3 else None
        token = await self._ctx.db(
            self._index.create_token,
            name=name.strip(),
            owner=owner,
            secret_hash=hash_secret(secret),
            scopes=sorted(set(scopes)),
            buckets=patterns,
            prefix=prefix,
            expires_at=expires_at,
            s3_key_id=s3_key_id,
        )
        pair = await self.s3.pair(s3_key_id) if s3_key_id is not None else None
        return IssuedToken(token, secret, pair)

    async def list_tokens(self) -> list[Token]:
        return await self._ctx.db(self._index.list_tokens)

    async def revoke_token(self, token_id: str) -> Token:
        check_storable(token_id, "the token id")
        token = await self._ctx.db(self._index.revoke_token, token_id)
        self._cache.clear()
        self.s3.forget()
        return token

    # presigned URLs -------------------------------------------------------------------
    async def _current_signing_key(self) -> bytes:
        now = time.monotonic()
        if self._signing_key is None or now - self._signing_key_read >= SIGNING_KEY_CACHE_SECONDS:
            value = await self._ctx.db(self._index.shared_secret, SIGNING_KEY)
            self._signing_key, self._signing_key_read = bytes.fromhex(value), now
        return self._signing_key

    async def rotate_signing_key(self) -> None:
        """A new presigned-URL key: every link signed so far stops working (on this
        instance at once, on the others within SIGNING_KEY_CACHE_SECONDS)."""
        value = await self._ctx.db(self._index.replace_shared_secret, SIGNING_KEY)
        self._signing_key, self._signing_key_read = bytes.fromhex(value), time.monotonic()
        log.warning("the presigned-URL signing key was rotated: earlier links no longer work")

    @staticmethod
    def _sign(
        signing_key: bytes,
        method: str,
        bucket: str,
        key: str,
        expires: int,
        token_id: str,
        max_size: int,
    ) -> str:
        message = "\n".join([method, bucket, key, str(expires), token_id, str(max_size)])
        return hmac.new(signing_key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    async def presign(
        self,
        caller: Caller,
        *,
        method: str,
        bucket: str,
        key: str,
        expires_in: int,
        max_size: int | None,
    ) -> Presigned:
        if method not in ("GET", "PUT"):
            raise InvalidArgument("method must be GET or PUT")
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise InvalidArgument(f"expires_in must be 1..{MAX_PRESIGN_SECONDS} seconds")
        validate_bucket_name(bucket)
        validate_key(key)
        scope = "read" if method == "GET" else "write"
        if not caller.allows(scope, bucket, key):
            raise AccessDenied(f"the token may not {scope} {bucket}/{key}")
        if caller.token_id is None or caller.grant is not None:
            raise AccessDenied("presigned URLs are issued for API tokens only")
        limit = self._ctx.settings.max_file_size
        size = min(max_size, limit) if max_size is not None else limit
        expires = int(time.time()) + expires_in
        signing_key = await self._current_signing_key()
        signature = self._sign(signing_key, method, bucket, key, expires, caller.token_id, size)
        route = "download" if method == "GET" else "objects"
        query = urlencode(
            dict(
                zip(
                    SIGNATURE_PARAMS,
                    [str(expires), caller.token_id, str(size), signature],
                    strict=True,
                )
            )
        )
        url = f"/api/v1/{route}/{bucket}/{quote(key)}?{query}"
        return Presigned(url, datetime.fromtimestamp(expires, UTC))

    async def verify_presigned(
        self, method: str, bucket: str, key: str, params: dict[str, str]
    ) -> Caller:
        """The caller a presigned URL stands for; any edit or expiry -> 403."""
        try:
            expires = int(params["X-Tfs-Expires"])
            token_id = params["X-Tfs-Token"]
            max_size = int(params["X-Tfs-Max-Size"])
            signature = params["X-Tfs-Signature"]
        except (KeyError, ValueError):
            raise AccessDenied("the presigned URL is incomplete") from None
        sign_method = "GET" if method == "HEAD" else method
        signing_key = await self._current_signing_key()
        expected = self._sign(signing_key, sign_method, bucket, key, expires, token_id, max_size)
        if not hmac.compare_digest(expected, signature):
            raise AccessDenied("the presigned URL's signature does not match")
        if expires < time.time():
            raise AccessDenied("the presigned URL has expired")
        try:
            token = await self._ctx.db(self._index.get_token, token_id)
            self._check_usable(token)
        except (NoSuchToken, Unauthenticated):
            # Only the token's own state; an index that cannot answer stays a 503 the
            # client retries, not a 403 that says the link is dead.
            raise AccessDenied("the token that signed this URL is no longer valid") from None
        issuer = caller_of(token)
        scope = "read" if sign_method == "GET" else "write"
        if not issuer.allows(scope, bucket, key):
            raise AccessDenied("the token that signed this URL may no longer do this")
        return Caller(
            name=f"{token.name} (presigned)",
            scopes=frozenset({scope}),
            buckets=(bucket,),
            token_id=token.id,
            grant=(scope, bucket, key),
            max_upload=max_size,
        )

    # audit -------------------------------------------------------------------------------
    async def record(self, caller: Caller, action: str, **fields: Any) -> None:
        await self.record_many(caller, action, [fields])

    async def record_many(self, caller: Caller, action: str, entries: list[dict[str, Any]]) -> None:
        """Several entries of one action in one transaction (a batch upload's files)."""
        rows = []
        for fields in entries:
            fields = dict(fields)
            rows.append(
                {
                    "at": datetime.now(UTC),
                    "actor": caller.name,
                    "token_id": caller.token_id,
                    "action": action,
                    "bucket": fields.pop("bucket", None),
                    "key": fields.pop("key", None),
                    "file_id": fields.pop("file_id", None),
                    "client": fields.pop("client", None),
                    "request_id": fields.pop("request_id", None),
                    "detail": fields or None,
                }
            )
        self.audit_log.add(rows)  # written within AuditBuffer's FLUSH_SECONDS

    async def audit_entries(
        self, *, bucket: str | None, since: datetime | None, after_id: int, limit: int
    ) -> list[AuditEntry]:
        await self.audit_log.flush()  # this instance's latest entries included
        return await self._ctx.db(
            self._index.audit_entries, bucket=bucket, since=since, after_id=after_id, limit=limit
        )

    async def purge_audit(self, before: datetime) -> int:
        return await self._ctx.db(self._index.purge_audit, before)


def caller_of(token: Token) -> Caller:
    return Caller(
        name=token.name,
        scopes=frozenset(token.scopes),
        buckets=token.buckets,
        prefix=token.prefix,
        token_id=token.id,
    )


def _new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)
