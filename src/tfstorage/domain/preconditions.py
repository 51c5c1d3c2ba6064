"""Read preconditions (RFC 9110 13.1): ETag lists and dates, shared by every front door."""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime


def etag_matches(header: str, *etags: str, weak: bool = True) -> bool:
    """If-None-Match compares weakly, If-Match strongly (RFC 9110 13.1). `etags` quoted:
    every ETag the representation answers to (a version assembled from parts has two, its
    MD5 and S3's multipart ETag; see domain/conditions.py)."""
    candidates = [c.strip() for c in header.split(",")]
    if weak:
        candidates = [c.removeprefix("W/") for c in candidates]
    return "*" in candidates or any(etag in candidates for etag in etags)


def not_modified_after(header: str, modified: datetime) -> bool:
    """True when `modified` is not after the header's date (1 s resolution); False for a
    date that does not parse (the condition is then ignored, as RFC 9110 says)."""
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False
    if since.tzinfo is None:
        return False
    return int(modified.timestamp()) <= int(since.timestamp())


def modified_after(header: str, modified: datetime) -> bool:
    """If-Unmodified-Since fails: `modified` is after the header's date. False for a date
    that does not parse: the condition is ignored (RFC 9110 13.1.4), not failed."""
    return is_http_date(header) and not not_modified_after(header, modified)


def is_http_date(header: str) -> bool:
    try:
        return parsedate_to_datetime(header).tzinfo is not None
    except (TypeError, ValueError):
        return False
