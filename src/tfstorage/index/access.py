"""Tokens, the audit log and shared secrets, in the same database as the objects."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.engine import Row

from tfstorage.domain.records import AuditEntry, Token
from tfstorage.errors import NotFound
from tfstorage.index.reads import require_aware, upsert, utcnow
from tfstorage.index.tables import audit_log, s3_keys, server_secrets, tokens
from tfstorage.index.transactions import MAX_PAGE, IndexStore


class NoSuchToken(NotFound):
    code = "NoSuchToken"
    default_message = "the token does not exist"


def _token(row: Row[Any]) -> Token:
    return Token(
        id=row.id,
        name=row.name,
        owner=row.owner,
        scopes=tuple(row.scopes),
        buckets=tuple(row.buckets),
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _new_token_row(
    token_id: str,
    name: str,
    owner: str,
    secret_hash: str,
    scopes: Sequence[str],
    buckets: Sequence[str],
    prefix: str,
    expires_at: datetime | None,
) -> dict[str, Any]:
    return {
        "id": token_id,
        "name": name,
        "owner": owner,
        "secret_hash": secret_hash,
        "scopes": list(scopes),
        "buckets": list(buckets),
        "prefix": prefix,
        "created_at": utcnow(),
        "expires_at": expires_at,
    }


class AccessIndex(IndexStore):
    # tokens ------------------------------------------------------------------------
    def create_token(
        self,
        *,
        name: str,
        owner: str,
        secret_hash: str,
        scopes: Sequence[str],
        buckets: Sequence[str],
        prefix: str,
        expires_at: datetime | None,
        s3_key_id: str | None = None,
    ) -> Token:
        """`s3_key_id`: an S3 access key of the token, made in the same transaction."""
        require_aware(expires_at, "expires_at")
        token_id = secrets.token_hex(8)

        def run(conn: Connection) -> Token:
            row = _new_token_row(
                token_id, name, owner, secret_hash, scopes, buckets, prefix, expires_at
            )
            conn.execute(insert(tokens).values(row))
            if s3_key_id is not None:
                conn.execute(
                    insert(s3_keys).values(
                        access_key_id=s3_key_id, token_id=token_id, created_at=utcnow()
                    )
                )
            return _get(conn, token_id)

        return self._write(run)

    def ensure_token(
        self, *, name: str, owner: str, secret_hash: str, scopes: Sequence[str]
    ) -> tuple[Token, bool]:
        """The token of `secret_hash`, made now (with every bucket, no prefix, no expiry)
        unless it exists; and whether it was made now. Instances starting at once on one
        index all succeed, whichever inserts first (ON CONFLICT: a failed INSERT would
        abort PostgreSQL's transaction and fail the start-up of the others)."""
        token_id = secrets.token_hex(8)

        def run(conn: Connection) -> tuple[Token, bool]:
            row = _new_token_row(token_id, name, owner, secret_hash, scopes, ["*"], "", None)
            stmt = (
                upsert(conn, tokens)
                .values(row)
                .on_conflict_do_nothing(index_elements=[tokens.c.secret_hash])
                .returning(tokens.c.id)
            )
            made = conn.execute(stmt).first() is not None
            found = conn.execute(select(tokens).where(tokens.c.secret_hash == secret_hash)).one()
            return _token(found), made

        return self._write(run)

    def token_by_hash(self, secret_hash: str) -> Token | None:
        def run(conn: Connection) -> Token | None:
            row = conn.execute(select(tokens).where(tokens.c.secret_hash == secret_hash)).first()
            return None if row is None else _token(row)

        return self._read(run)

    def get_token(self, token_id: str) -> Token:
        return self._read(lambda conn: _get(conn, token_id))

    def list_tokens(self) -> list[Token]:
        def run(conn: Connection) -> list[Token]:
            rows = conn.execute(select(tokens).order_by(tokens.c.created_at, tokens.c.id))
            return [_token(r) for r in rows]

        return self._read(run)

    def count_tokens(self) -> int:
        return self._read(lambda conn: len(conn.execute(select(tokens.c.id)).all()))

    def revoke_token(self, token_id: str) -> Token:
        def run(conn: Connection) -> Token:
            _get(conn, token_id)
            conn.execute(
                update(tokens)
                .where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            return _get(conn, token_id)

        return self._write(run)

    def touch_token(self, token_id: str, when: datetime) -> None:
        self._write(
            lambda conn: conn.execute(
                update(tokens).where(tokens.c.id == token_id).values(last_used_at=when)
            )
        )

    # S3 access keys ----------------------------------------------------------------
    def create_s3_key(self, token_id: str, access_key_id: str) -> None:
        def run(conn: Connection) -> None:
            _get(conn, token_id)
            conn.execute(
                insert(s3_keys).values(
                    access_key_id=access_key_id, token_id=token_id, created_at=utcnow()
                )
            )

        self._write(run)

    def token_by_s3_key(self, access_key_id: str) -> Token | None:
        def run(conn: Connection) -> Token | None:
            row = conn.execute(
                select(tokens)
                .join(s3_keys, s3_keys.c.token_id == tokens.c.id)
                .where(s3_keys.c.access_key_id == access_key_id)
            ).first()
            return None if row is None else _token(row)

        return self._read(run)

    # audit -------------------------------------------------------------------------
    def record(self, entries: Sequence[dict[str, Any]]) -> None:
        if entries:
            self._write(lambda conn: conn.execute(insert(audit_log), list(entries)))

    def audit_entries(
        self,
        *,
        bucket: str | None = None,
        since: datetime | None = None,
        after_id: int = 0,
        limit: int = MAX_PAGE,
    ) -> list[AuditEntry]:
        require_aware(since, "since")

        def run(conn: Connection) -> list[AuditEntry]:
            stmt = select(audit_log).where(audit_log.c.id > after_id)
            if bucket is not None:
                stmt = stmt.where(audit_log.c.bucket == bucket)
            if since is not None:
                stmt = stmt.where(audit_log.c.at >= since)
            rows = conn.execute(stmt.order_by(audit_log.c.id).limit(min(limit, MAX_PAGE)))
            return [AuditEntry(**r._mapping) for r in rows]

        return self._read(run)

    def purge_audit(self, before: datetime) -> int:
        require_aware(before, "before")
        return self._write(
            lambda conn: conn.execute(delete(audit_log).where(audit_log.c.at < before)).rowcount
        )

    # secrets -----------------------------------------------------------------------
    def shared_secret(self, name: str) -> str:
        """A random secret created once and then shared by every instance."""

        def run(conn: Connection) -> str:
            stmt = (
                upsert(conn, server_secrets)
                .values(name=name, value=secrets.token_hex(32))
                .on_conflict_do_nothing(index_elements=[server_secrets.c.name])
            )
            conn.execute(stmt)
            return str(
                conn.execute(
                    select(server_secrets.c.value).where(server_secrets.c.name == name)
                ).scalar_one()
            )

        return self._write(run)

    def replace_shared_secret(self, name: str) -> str:
        """A new random value for the secret `name`; the old one is gone."""
        value = secrets.token_hex(32)

        def run(conn: Connection) -> str:
            stmt = upsert(conn, server_secrets).values(name=name, value=value)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[server_secrets.c.name], set_={"value": value}
                )
            )
            return value

        return self._write(run)


def _get(conn: Connection, token_id: str) -> Token:
    row = conn.execute(select(tokens).where(tokens.c.id == token_id)).first()
    if row is None:
        raise NoSuchToken(f"token {token_id!r} does not exist")
    return _token(row)
