"""S3-style listing of every version of a bucket's keys: key order, newest first within a
key, a trashed key shown under a delete marker, common prefixes, paged by key and version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from tfstorage.domain.version_listing import (
    NULL_VERSION_ID,
    DeleteMarker,
    VersionEntry,
    VersionListing,
    delete_marker_id,
    marked_head,
)
from tfstorage.index.listing import group_of, prefix_range, successor
from tfstorage.index.reads import fetch_by_ids
from tfstorage.index.tables import object_keys, versions

_MAX_SCAN = 1000  # version rows fetched per query


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where the scan resumes: keys after `key`, or `key`'s versions older than `below`."""

    key: str
    below: int | None  # None: nothing more of `key` itself
    inclusive: bool = False  # `key` itself is wanted whole (a prefix's first key)

    def where(self) -> ColumnElement[bool]:
        if self.inclusive:
            return versions.c.key >= self.key
        if self.below is None:
            return versions.c.key > self.key
        return or_(
            versions.c.key > self.key,
            and_(versions.c.key == self.key, versions.c.id < self.below),
        )


@dataclass(frozen=True, slots=True)
class _Row:
    key: str
    seq: int | None  # None: a delete marker or a common prefix
    head: int | None  # the key's head, for a delete marker
    deleted_at: datetime | None


def _start(
    conn: Connection, bid: int, prefix: str, key_marker: str, version_marker: str
) -> _Cursor:
    if not key_marker or key_marker < prefix:
        return _Cursor(prefix, None, inclusive=True)
    if not version_marker:
        return _Cursor(key_marker, None)
    if marked_head(version_marker) is not None:
        # After a key's delete marker come all of its versions.
        return _Cursor(key_marker, 2**63 - 1)
    named = (
        versions.c.unversioned
        if version_marker == NULL_VERSION_ID
        else versions.c.file_id == version_marker
    )
    seq = conn.execute(
        select(versions.c.id).where(
            versions.c.bucket_id == bid, versions.c.key == key_marker, named
        )
    ).scalar_one_or_none()
    if seq is None:
        # Gone since the last page (clients delete a page's versions before asking for
        # the next): resume after the key, as the version's position cannot be known.
        return _Cursor(key_marker, None)
    return _Cursor(key_marker, int(seq))


def list_object_versions(
    conn: Connection,
    bid: int,
    *,
    prefix: str,
    delimiter: str,
    key_marker: str,
    version_marker: str,
    limit: int,
) -> VersionListing:
    rows: list[_Row] = []
    start = cursor = _start(conn, bid, prefix, key_marker, version_marker)
    while len(rows) <= limit:  # one entry past the limit tells us we are truncated
        batch = min(limit + 1 - len(rows), _MAX_SCAN)
        stmt = (
            select(
                versions.c.id,
                versions.c.key,
                object_keys.c.current_id,
                object_keys.c.deleted_at,
            )
            .select_from(
                versions.outerjoin(
                    object_keys,
                    and_(
                        object_keys.c.bucket_id == versions.c.bucket_id,
                        object_keys.c.key == versions.c.key,
                    ),
                )
            )
            .where(
                versions.c.bucket_id == bid, cursor.where(), *prefix_range(versions.c.key, prefix)
            )
            .order_by(versions.c.key, versions.c.id.desc())
            .limit(batch)
        )
        found = conn.execute(stmt).all()
        group: str | None = None
        for seq, key, head, deleted_at in found:
            group = group_of(key, prefix, delimiter)
            if group is not None:
                if group > key_marker and (not rows or rows[-1].key != group):
                    rows.append(_Row(group, None, None, None))
            else:
                resumed_inside = key == start.key and start.below is not None
                if seq == head and deleted_at is not None and not resumed_inside:
                    rows.append(_Row(key, None, head, deleted_at))
                rows.append(_Row(key, seq, head, None))
            if len(rows) > limit:
                break
        if len(found) < batch or len(rows) > limit:
            break
        if group is not None:
            after = successor(group)  # the rest of the group can be huge: seek past it
            if after is None:
                break
            cursor = _Cursor(after, None, inclusive=True)
        else:
            cursor = _Cursor(found[-1].key, found[-1].id)

    truncated = len(rows) > limit
    rows = rows[:limit]
    wanted = {r.seq for r in rows if r.seq is not None} | {r.head for r in rows if r.head}
    loaded = fetch_by_ids(conn, sorted(wanted))
    entries: list[VersionEntry] = []
    prefixes: list[str] = []
    for row in rows:
        if row.seq is None and row.head is None:
            prefixes.append(row.key)
        elif row.seq is None:
            assert row.head is not None and row.deleted_at is not None
            head = loaded[row.head]
            marker = DeleteMarker(
                row.key, delete_marker_id(head.file_id), row.deleted_at, head.created_by
            )
            entries.append(VersionEntry(None, marker, is_latest=True))
        elif row.seq in loaded:
            version = loaded[row.seq]
            entries.append(VersionEntry(version, None, is_latest=version.visible))
    last = rows[-1] if truncated and rows else None
    # A page that ends on a common prefix resumes after the prefix, by key alone.
    ends_on_entry = last is not None and not (last.seq is None and last.head is None)
    next_version = entries[-1].version_id if ends_on_entry and entries else ""
    return VersionListing(
        entries=entries,
        common_prefixes=prefixes,
        truncated=truncated,
        next_key_marker=last.key if last is not None else "",
        next_version_id_marker=next_version,
    )
