"""Metadata search over the latest live version of every key."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, exists, select

from tfstorage.domain.records import FileQuery, FileSearchPage
from tfstorage.errors import InvalidArgument
from tfstorage.index.listing import prefix_range
from tfstorage.index.reads import bucket_id, fetch_by_ids, require_aware
from tfstorage.index.tables import object_keys, tags, versions

MAX_LIMIT = 1000
# The marker is the last seq returned, but callers must treat it as opaque: a prefix
# lets the format change later without old markers being misread.
_MARKER_PREFIX = "s"


def search_files(conn: Connection, q: FileQuery) -> FileSearchPage:
    if q.limit < 1:
        raise InvalidArgument("limit must be at least 1")
    limit = min(q.limit, MAX_LIMIT)
    require_aware(q.created_after, "created_after")
    require_aware(q.created_before, "created_before")
    where: list[ColumnElement[bool]] = [object_keys.c.deleted_at.is_(None)]
    if q.bucket is not None:
        where.append(object_keys.c.bucket_id == bucket_id(conn, q.bucket))
    if q.prefix:
        where.extend(prefix_range(object_keys.c.key, q.prefix))
    for key, value in q.tags:
        where.append(
            exists().where(
                tags.c.version_id == versions.c.id, tags.c.key == key, tags.c.value == value
            )
        )
    if q.content_type is not None:
        where.append(versions.c.content_type == q.content_type)
    if q.min_size is not None:
        where.append(versions.c.size >= q.min_size)
    if q.max_size is not None:
        where.append(versions.c.size <= q.max_size)
    # Half-open [after, before): consecutive windows neither overlap nor leave gaps.
    if q.created_after is not None:
        where.append(versions.c.created_at >= q.created_after)
    if q.created_before is not None:
        where.append(versions.c.created_at < q.created_before)
    if q.marker:
        where.append(versions.c.id > _parse_marker(q.marker))

    stmt = (
        select(versions.c.id)
        .select_from(object_keys.join(versions, versions.c.id == object_keys.c.current_id))
        .where(*where)
        .order_by(versions.c.id)
        .limit(limit + 1)
    )
    seqs = list(conn.execute(stmt).scalars())
    truncated = len(seqs) > limit
    seqs = seqs[:limit]
    found = fetch_by_ids(conn, seqs)
    return FileSearchPage(
        files=[found[seq] for seq in seqs if seq in found],
        truncated=truncated,
        next_marker=f"{_MARKER_PREFIX}{seqs[-1]}" if truncated else "",
    )


def _parse_marker(marker: str) -> int:
    digits = marker.removeprefix(_MARKER_PREFIX)
    if marker == digits or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise InvalidArgument("invalid marker")
    return int(digits)
