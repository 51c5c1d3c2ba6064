"""Whether a caller may do an operation: one rule for every front door (REST and S3)."""

from __future__ import annotations

from tfstorage.domain.caller import Caller
from tfstorage.errors import AccessDenied, Unauthenticated
from tfstorage.service.storage import Storage


async def authorize(
    storage: Storage, caller: Caller, scope: str, bucket: str | None = None, key: str | None = None
) -> None:
    """Raise 401 (no token) or 403 (a token without this right) unless allowed.

    Reads of a public-read bucket need no token.
    """
    if caller.allows(scope, bucket, key):
        return
    public = scope == "read" and bucket is not None and caller.grant is None
    if public and bucket is not None and await storage.buckets.is_public_read(bucket):
        return
    if caller.anonymous:
        raise Unauthenticated("a token is required", headers={"WWW-Authenticate": "Bearer"})
    target = f"{bucket}/{key}" if bucket and key else (bucket or "every bucket")
    raise AccessDenied(f"this token may not {scope} {target}")
