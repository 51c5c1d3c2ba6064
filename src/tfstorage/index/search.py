"""Metadata search over the latest live version of every key."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, FromClause, Select, exists, select

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
    seqs: list[int] = list(conn.execute(search_statement(conn, q, limit)).scalars())
    truncated = len(seqs) > limit
    seqs = seqs[:limit]
    found = fetch_by_ids(conn, seqs)
    return FileSearchPage(
        files=[found[seq] for seq in seqs if seq in found],
        truncated=truncated,
        next_marker=f"{_MARKER_PREFIX}{seqs[-1]}" if truncated else "",
    )


def search_statement(conn: Connection, q: FileQuery, limit: int) -> Select[Any]:
    """The ids of one page of hits (and one more, to tell whether another page follows)."""
    require_aware(q.created_after, "created_after")
    require_aware(q.created_before, "created_before")
    # Only a key's live head is found. Without tags the versions drive the search, the
    # head a probe per hit (ix_object_keys_current_id_deleted_at), so that the planner
    # can read the hits from whichever index of versions fits: the versions themselves in
    # id order (the page order) for an unselective filter, ix_versions_content_type_id
    # (a type's versions in id order) or ix_versions_size for a selective one.
    where: list[ColumnElement[bool]] = [
        exists().where(
            object_keys.c.current_id == versions.c.id, object_keys.c.deleted_at.is_(None)
        )
    ]
    bid = None if q.bucket is None else bucket_id(conn, q.bucket)
    if q.prefix:
        where.extend(prefix_range(versions.c.key, q.prefix))
    # The first tag drives the search (ix_tags_key_value_version_id: its hits in version
    # order), so a tag few versions carry answers at once however many keys there are;
    # further tags are checks on those hits.
    first = tags.alias("first_tag")
    if q.tags:
        key, value = q.tags[0]
        where += [first.c.key == key, first.c.value == value]
    for key, value in q.tags[1:]:
        where.append(
            exists().where(
                tags.c.version_id == versions.c.id, tags.c.key == key, tags.c.value == value
            )
        )
    if q.content_type is not None:
        where.append(versions.c.content_type == q.content_type)
    sizes: list[ColumnElement[bool]] = []
    if q.min_size is not None:
        sizes.append(versions.c.size >= q.min_size)
    if q.max_size is not None:
        sizes.append(versions.c.size <= q.max_size)
    where += sizes
    few = None
    if sizes and not q.tags and q.content_type is None and conn.dialect.name == "sqlite":
        few = _few_sizes(conn, sizes, bid)
    if few is not None:
        where.append(versions.c.id.in_(few))  # in this bucket already
    elif bid is not None:
        where.append(versions.c.bucket_id == bid)
    # Half-open [after, before): consecutive windows neither overlap nor leave gaps.
    if q.created_after is not None:
        where.append(versions.c.created_at >= q.created_after)
    if q.created_before is not None:
        where.append(versions.c.created_at < q.created_before)
    order = first.c.version_id if q.tags else versions.c.id
    if q.marker:
        where.append(order > _parse_marker(q.marker))

    source: FromClause = versions
    if q.tags:
        source = first.join(versions, versions.c.id == first.c.version_id)
    return select(versions.c.id).select_from(source).where(*where).order_by(order).limit(limit + 1)


def _few_sizes(
    conn: Connection, sizes: list[ColumnElement[bool]], bid: int | None
) -> list[int] | None:
    """SQLite keeps no statistics of value ranges, so it cannot tell a size range few
    versions fall in (walk ix_versions_size, sort the hits) from one most do (walk the
    versions in page order, checking each). Ask the index: fewer than _SIZE_PROBE hits
    are read from it and named by id (those of the bucket, if one is asked for); more,
    and None: the search pages through the versions in id order."""
    rows = conn.execute(
        select(versions.c.id, versions.c.bucket_id).where(*sizes).limit(_SIZE_PROBE)
    ).all()
    if len(rows) == _SIZE_PROBE:
        return None
    return [seq for seq, in_bucket in rows if bid is None or in_bucket == bid]


_SIZE_PROBE = 2000


def _parse_marker(marker: str) -> int:
    digits = marker.removeprefix(_MARKER_PREFIX)
    if marker == digits or not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise InvalidArgument("invalid marker")
    return int(digits)
