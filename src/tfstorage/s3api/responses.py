"""S3's XML answers, built from (tag, children) trees with every text escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from starlette.responses import Response

from tfstorage.domain.records import ObjectVersion
from tfstorage.s3api.errors import xml_text

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"


class RawXml(str):
    """Elements already rendered, every text in them escaped: placed as they are among a
    document's nodes (a listing renders its thousand entries in one pass)."""


Node = tuple[str, "str | int | bool | Sequence[Node] | None"] | RawXml
"""(tag, text) or (tag, children); None leaves the element out."""


def _render(node: Node) -> str:
    if isinstance(node, RawXml):
        return node
    tag, value = node
    if value is None:
        return ""
    if isinstance(value, bool):
        body = "true" if value else "false"
    elif isinstance(value, str | int):
        body = xml_text(str(value))
    else:
        body = "".join(_render(child) for child in value)
    return f"<{tag}>{body}</{tag}>"


def xml_document(root: str, children: Sequence[Node]) -> bytes:
    inner = "".join(_render(child) for child in children)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NAMESPACE}">{inner}</{root}>'
    ).encode()


def xml_response(
    root: str, children: Sequence[Node], *, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        xml_document(root, children), media_type="application/xml", headers=headers or {}
    )


def iso_time(when: datetime) -> str:
    """S3's timestamps in XML: ISO 8601 in UTC with milliseconds."""
    if when.tzinfo is not UTC:  # the index's times are UTC already
        when = when.astimezone(UTC)
    # One %-format, not isoformat() and a slice: half the time, a thousand a page.
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (an f-string is slower)
        when.year, when.month, when.day, when.hour, when.minute, when.second,
        when.microsecond // 1000,
    )  # fmt: skip


def http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def quoted_etag(etag: str) -> str:
    return f'"{etag}"'


def object_etag(version: ObjectVersion) -> str:
    """The ETag S3 clients expect: for an object assembled from parts, S3's multipart
    ETag (tools compare it with one computed from their parts); else the MD5."""
    return quoted_etag(version.parts_etag or version.etag)


def object_etags(version: ObjectVersion) -> tuple[str, ...]:
    """Every ETag a condition may name the version by (domain/conditions.py)."""
    return tuple(quoted_etag(e) for e in (version.parts_etag, version.etag) if e is not None)
