"""S3-style listing of live keys: prefix, delimiter, marker, paging, in byte order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from tfstorage.domain.records import EntryListing, ListEntry, Listing
from tfstorage.index.reads import chunks, fetch_by_ids
from tfstorage.index.tables import object_keys, versions

_MAX_SCAN = 1000  # head rows fetched per query
_SURROGATES = range(0xD800, 0xE000)


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with `prefix`.

    None when there is none (the prefix is all U+10FFFF). Code point order is the
    order of the UTF-8 bytes, which is how both databases compare keys here.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code in _SURROGATES:
            code = _SURROGATES.stop  # not valid in UTF-8, never part of a key
        if code <= 0x10FFFF:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def prefix_range(column: ColumnElement[str], prefix: str) -> list[ColumnElement[bool]]:
    """`column` starts with `prefix`, as an index range (LIKE would treat % and _)."""
    if not prefix:
        return []
    bounds = [column >= prefix]
    upper = successor(prefix)
    if upper is not None:
        bounds.append(column < upper)
    return bounds


def list_objects(
    conn: Connection, bucket_id: int, *, prefix: str, delimiter: str, marker: str, limit: int
) -> Listing:
    """A page of whole versions (what batch jobs and archives work on)."""
    entries, truncated = _scan(conn, bucket_id, prefix, delimiter, marker, limit)
    heads = [seq for _, seq in entries if seq is not None]
    found = fetch_by_ids(conn, heads)
    return Listing(
        # A head deleted between the scan and the load (not possible inside one
        # snapshot, kept defensive) is simply left out.
        objects=[found[seq] for seq in heads if seq in found],
        common_prefixes=[name for name, seq in entries if seq is None],
        truncated=truncated,
        next_marker=entries[-1][0] if truncated and entries else "",
    )


def list_entries(
    conn: Connection, bucket_id: int, *, prefix: str, delimiter: str, marker: str, limit: int
) -> EntryListing:
    """A page as the REST and S3 listings show it: the few columns of `ListEntry`, each
    head read by primary key, with no tags, metadata, blob or bucket rows."""
    if conn.dialect.name == "sqlite":
        # Read with the keys, in one statement: a second one by id (1,000 bound
        # parameters a page) cost a third of the page. SQLite's plan for the join is
        # fixed by the index; PostgreSQL's depends on statistics (a small table was seen
        # hash-joined and sorted), so it keeps the two statements whose plans hold.
        entries, truncated = _scan(conn, bucket_id, prefix, delimiter, marker, limit, ENTRY_COLUMNS)
        objects = [ListEntry._make(row) for _, row in entries if row is not None]
    else:
        entries, truncated = _scan(conn, bucket_id, prefix, delimiter, marker, limit)
        heads = [seq for _, seq in entries if seq is not None]
        found: dict[int, ListEntry] = {}
        for batch in chunks(heads):
            for row in conn.execute(ENTRY_SELECT.where(versions.c.id.in_(batch))):
                found[row[0]] = ListEntry(*tuple(row)[1:])
        objects = [found[seq] for seq in heads if seq in found]
    return EntryListing(
        objects=objects,
        common_prefixes=[name for name, row in entries if row is None],
        truncated=truncated,
        next_marker=entries[-1][0] if truncated and entries else "",
    )


# ListEntry's fields after the key, in order.
ENTRY_COLUMNS = (
    versions.c.file_id,
    versions.c.size,
    versions.c.etag,
    versions.c.parts_etag,
    versions.c.sha256,
    versions.c.content_type,
    versions.c.created_at,
    versions.c.created_by,
)
# The same by id (PostgreSQL): the id, the key, then ENTRY_COLUMNS.
ENTRY_SELECT = select(versions.c.id, versions.c.key, *ENTRY_COLUMNS)


def _scan(
    conn: Connection,
    bucket_id: int,
    prefix: str,
    delimiter: str,
    marker: str,
    limit: int,
    columns: Sequence[ColumnElement[Any]] = (),
) -> tuple[list[tuple[str, Any]], bool]:
    """One page's entries in key order, (key, row) for objects and (common prefix, None)
    for groups, and whether more follow; `row` is the head's seq, or with `columns` the
    row of the key and them. Reads ix_object_keys_live (and each head by primary key for
    `columns`): the live keys of the bucket in key order, never the table's rows."""
    entries: list[tuple[str, Any]] = []
    lower, inclusive = (marker, False) if marker >= prefix else (prefix, True)
    while len(entries) <= limit:  # one entry past the limit tells us we are truncated
        batch = min(limit + 1 - len(entries), _MAX_SCAN)
        statement = scan_statement(
            bucket_id, prefix, lower, inclusive=inclusive, limit=batch, columns=columns
        )
        rows = conn.execute(statement).all()
        group: str | None = None
        for row in rows:
            key = row[0]
            group = group_of(key, prefix, delimiter)
            if group is None:
                entries.append((key, row if columns else row[1]))
            elif group > marker and (not entries or entries[-1][0] != group):
                entries.append((group, None))
            if len(entries) > limit:
                break
        if len(rows) < batch or len(entries) > limit:
            break
        if group is not None:
            # The rest of the group can be huge: seek past all of it in the index.
            after = successor(group)
            if after is None:
                break
            lower, inclusive = after, True
        else:
            lower, inclusive = rows[-1][0], False
    truncated = len(entries) > limit
    return entries[:limit], truncated


def scan_statement(
    bucket_id: int,
    prefix: str,
    lower: str,
    *,
    inclusive: bool,
    limit: int,
    columns: Sequence[ColumnElement[Any]] = (),
) -> Select[Any]:
    """Live keys of a bucket from `lower` on, in key order, with their heads' seq, or
    with `columns` of their heads instead."""
    if columns:
        query = select(object_keys.c.key, *columns).join_from(
            object_keys, versions, versions.c.id == object_keys.c.current_id
        )
    else:
        query = select(object_keys.c.key, object_keys.c.current_id)
    return (
        query.where(
            object_keys.c.bucket_id == bucket_id,
            object_keys.c.deleted_at.is_(None),
            object_keys.c.key >= lower if inclusive else object_keys.c.key > lower,
            *prefix_range(object_keys.c.key, prefix),
        )
        .order_by(object_keys.c.key)
        .limit(limit)
    )


def group_of(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]
