"""Conditional writes (RFC 9110 13.1): `If-Match` and `If-None-Match` on a write.

A write's precondition is judged against the key's latest live version at the moment
the write would replace it (the index does that inside its transaction); a key that
does not exist, or whose latest version is in the trash, is absent. ETags compare
strongly: a weak `W/"..."` never matches. Every version's ETag is the MD5 hex of its
whole content (what the REST API answers); a version assembled from parts has a second
one, S3's multipart ETag (`<hex>-<parts>`, what the S3 endpoint answers). Both name the
same bytes, so a condition matches either: whichever door a client got its ETag from,
it works on both.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfstorage.errors import InvalidArgument, PreconditionFailed

ANY = "*"
_MAX_ETAGS = 100


@dataclass(frozen=True, slots=True)
class WriteCondition:
    """`if_match` / `if_none_match`: None (no header), `"*"`, or a set of ETags
    (unquoted, lower case)."""

    if_match: frozenset[str] | str | None = None
    if_none_match: frozenset[str] | str | None = None

    def check(self, current_etag: str | None, parts_etag: str | None = None) -> None:
        """Raise PreconditionFailed unless the write may replace the current version
        (`None`: the key is absent); `parts_etag`: its multipart ETag, if it has one."""
        current = {etag for etag in (current_etag, parts_etag) if etag is not None}
        if self.if_match is not None:
            if current_etag is None:
                raise PreconditionFailed("If-Match: the object does not exist")
            if self.if_match != ANY and current.isdisjoint(self.if_match):
                raise PreconditionFailed("If-Match does not match the object's current ETag")
        if self.if_none_match is not None and current_etag is not None:
            if self.if_none_match == ANY:
                raise PreconditionFailed("If-None-Match: * but the object already exists")
            if not current.isdisjoint(self.if_none_match):
                raise PreconditionFailed("If-None-Match matches the object's current ETag")


def parse_condition(if_match: str | None, if_none_match: str | None) -> WriteCondition | None:
    """The precondition of a write from its two header values (None when neither)."""
    if if_match is None and if_none_match is None:
        return None
    return WriteCondition(
        if_match=_parse_etags(if_match, "If-Match", weak_matches=False),
        if_none_match=_parse_etags(if_none_match, "If-None-Match", weak_matches=True),
    )


def _parse_etags(
    header: str | None, name: str, *, weak_matches: bool
) -> frozenset[str] | str | None:
    if header is None:
        return None
    tokens = [token.strip() for token in header.split(",")]
    if tokens == [ANY]:
        return ANY
    if any(not token for token in tokens) or ANY in tokens:
        raise InvalidArgument(f"{name} must be '*' or a comma-separated list of ETags")
    if len(tokens) > _MAX_ETAGS:
        raise InvalidArgument(f"{name} lists more than {_MAX_ETAGS} ETags")
    etags: set[str] = set()
    for token in tokens:
        if token.startswith("W/"):
            # If-Match compares strongly: a weak tag matches nothing. If-None-Match
            # compares weakly (RFC 9110 13.1.2), and our tags are all strong anyway.
            if not weak_matches:
                continue
            token = token[2:]
        etags.add(_unquote(token, name).lower())
    return frozenset(etags)


def _unquote(token: str, name: str) -> str:
    if token.startswith('"') != token.endswith('"') or (token.startswith('"') and len(token) < 2):
        raise InvalidArgument(f"{name} holds a malformed ETag")
    value = token[1:-1] if token.startswith('"') else token
    if (
        not value
        or any(c in value for c in '" \t')
        or not value.isascii()
        or not value.isprintable()
    ):
        raise InvalidArgument(f"{name} holds a malformed ETag")
    return value
