"""Who is calling and what they may do: pure rules, no I/O.

A caller is resolved once per request (the API's single caller dependency) and then
asked, for each operation, whether a scope on a bucket (and key) is allowed.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

SCOPES = ("read", "write", "delete", "admin")
_PATTERN_RE = re.compile(r"[a-z0-9.*-]{1,63}")


def validate_bucket_pattern(pattern: str) -> str:
    """`models`, `ckpt-*` or `*`: bucket-name characters plus `*` wildcards."""
    if not _PATTERN_RE.fullmatch(pattern):
        raise ValueError(f"bucket pattern {pattern[:64]!r} may only hold a-z 0-9 . - *")
    return pattern


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    scopes: frozenset[str]
    buckets: tuple[str, ...] = ("*",)
    prefix: str = ""
    token_id: str | None = None
    # A presigned URL grants exactly one method on one object.
    grant: tuple[str, str, str] | None = None  # (scope, bucket, key)
    max_upload: int | None = None  # a presigned PUT's size limit
    anonymous: bool = False

    @classmethod
    def unrestricted(cls, name: str = "anonymous") -> Caller:
        """Full rights: for AUTH_ENABLED=false."""
        return cls(name=name, scopes=frozenset(SCOPES))

    @classmethod
    def nobody(cls) -> Caller:
        """No token: may only read public buckets."""
        return cls(name="anonymous", scopes=frozenset(), buckets=(), anonymous=True)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes and self.covers_bucket("*")

    def covers_bucket(self, bucket: str) -> bool:
        return any(fnmatch.fnmatchcase(bucket, p) for p in self.buckets)

    def allows(self, scope: str, bucket: str | None = None, key: str | None = None) -> bool:
        """May this caller use `scope` on `bucket` (and `key`)? `bucket=None` means an
        operation that spans every bucket, which needs a `*` pattern."""
        if self.grant is not None:
            return self.grant == (scope, bucket, key)
        if scope not in self.scopes and "admin" not in self.scopes:
            return False
        if bucket is None:
            # Spanning every bucket: only for tokens confined to no prefix.
            return "*" in self.buckets and not self.prefix
        if not self.covers_bucket(bucket):
            return False
        if self.prefix and scope != "admin":
            # Listing under a narrower or equal prefix is fine; keys must start with it.
            return key is not None and key.startswith(self.prefix)
        return True
